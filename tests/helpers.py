"""What several test modules share: running the `lowdiff` command in-process."""
from lowdiff.cli import main


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `lowdiff ARGV`; argparse's own errors exit via SystemExit."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
