"""``python -m difftrt``: the command line."""

from difftrt.cli import main

if __name__ == "__main__":
    main()
