"""``python -m nptm.train``: the study's command line, kept under the name users know (``nptm.study.cli``). With
``--jobs N`` the workers' server starts before this process imports torch."""
import sys

from nptm.study.jobs import start_early

if __name__ == "__main__":
    start_early(sys.argv[1:])
    from nptm.study.cli import main
    from nptm.study.exits import end

    end(main())
