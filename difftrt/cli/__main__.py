"""``python -m difftrt.cli``."""

from difftrt.cli import main

if __name__ == "__main__":
    main()
