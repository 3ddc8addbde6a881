"""Peak RSS of one command, without the benchmark process's own memory in it.

Linux carries the high-water RSS of the image a child replaces at exec into the child's ru_maxrss — after a
fork or vfork that image is the parent's, so a child of the benchmark process (which holds the sandbox and its
grants) reports at least the benchmark's own RSS. This launcher is tiny (`python -I -S`, ~10 MB), spawns the
command, and reports the command's ru_maxrss from wait4: the figure is max(launcher, command), i.e. the command's.

  python -I -S bench/rss.py CMD [ARGS...]    # prints {"maxrss_kb": N, "rc": N}; the command's output is discarded
"""

import json
import os
import sys

if __name__ == "__main__":
    argv = sys.argv[1:]
    devnull = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=devnull)
    _, status, usage = os.wait4(pid, 0)
    print(json.dumps({"maxrss_kb": usage.ru_maxrss, "rc": os.waitstatus_to_exitcode(status)}))
