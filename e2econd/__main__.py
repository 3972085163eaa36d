"""``python -m e2econd ...`` (used by ``torchrun -m e2econd train ...``)."""

from e2econd.cli import main

if __name__ == "__main__":
    main()
