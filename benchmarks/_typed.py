"""The command line of a benchmark as a reader would type it: the data folder given on the command line
is recorded as `DATA` (one machine's absolute path means nothing on another)."""
import sys


def typed_command(script, argv=None, flag='--data-dir'):
    "`python SCRIPT ARGS` with the value of `flag` (`--data-dir D` or `--data-dir=D`) written as DATA."
    args = list(sys.argv[1:] if argv is None else argv)
    out = ['DATA' if i and args[i - 1] == flag else f'{flag}=DATA' if a.startswith(flag + '=') else a
           for i, a in enumerate(args)]
    return ' '.join(['python', script] + out)


def typed_data(value):
    "How the data folder is recorded: DATA when it was given on the command line, else where it was found."
    return 'DATA' if value is not None else 'the default data folder ($FASTDROPOUT_NB_DATA or the cache)'
