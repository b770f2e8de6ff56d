"""``python -m difftransforms``: the same as the ``difftransforms`` command."""

from difftransforms.cli import main

if __name__ == "__main__":
    main(prog_name="difftransforms")
