"""Entry point of the toy method the foundation tests drive: python tests/toy_paper/launch.py."""
from common.launch import main

if __name__ == "__main__":
    main(paper="toy_paper")
