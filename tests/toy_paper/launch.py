"""Entry point of the toy method the foundation tests drive: python tests/toy_paper/launch.py."""
from common.launch import main
from eval.api import evaluate_run


def run(argv: list[str] | None = None) -> None:
    main(paper="toy_paper", argv=argv, after_train=evaluate_run)


if __name__ == "__main__":
    run()
