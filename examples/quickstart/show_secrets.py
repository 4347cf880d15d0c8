"""The sample application: list the secret files it finds, with mode and owner, never content."""

import os
import pwd
import stat
import sys

directory = sys.argv[1] if len(sys.argv) > 1 else "/run/secrets"
print(f"app: running as uid {os.getuid()}, gid {os.getgid()}; files in {directory}:")
for name in sorted(os.listdir(directory)):
    if name.startswith(".."):
        continue  # the ..data layout behind the names
    info = os.stat(os.path.join(directory, name))
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    print(f"  {name:<12} {stat.filemode(info.st_mode)} {oct(info.st_mode & 0o7777):>6} "
          f"owner {owner}:{info.st_gid} size {info.st_size}")
exported = [name for name in ("API_TOKEN",) if name in os.environ]
print(f"app: environment variables exported by the manifest: {', '.join(exported) or 'none'}")
