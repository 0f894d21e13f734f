#!/usr/bin/env python3
"""Drive ftpgate with Python's ftplib for the integration tests.

usage: ftpclient.py HOST PORT USER PASSWORD [--tls] OPS_JSON

OPS_JSON is a list of operations run in order on one session:
  ["put", LOCAL, REMOTE]   storbinary
  ["get", REMOTE, LOCAL]   retrbinary
  ["mlsd", DIR]            prints one JSON object per entry: {"name":..., "facts":{...}}
  ["size", REMOTE]         prints {"size": N}
Any ftplib error ends the script with exit code 3 and the error on stderr.
"""

import ftplib
import json
import ssl
import sys


def main(argv):
    args = [a for a in argv[1:] if a != "--tls"]
    use_tls = "--tls" in argv[1:]
    if len(args) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, user, password, ops_json = args
    ops = json.loads(ops_json)

    if use_tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ftp = ftplib.FTP_TLS(context=ctx, timeout=30)
    else:
        ftp = ftplib.FTP(timeout=30)
    try:
        ftp.connect(host, int(port))
        ftp.login(user, password)  # FTP_TLS sends AUTH TLS first
        if use_tls:
            ftp.prot_p()
        for op in ops:
            kind = op[0]
            if kind == "put":
                with open(op[1], "rb") as f:
                    ftp.storbinary("STOR " + op[2], f)
            elif kind == "get":
                with open(op[2], "wb") as f:
                    ftp.retrbinary("RETR " + op[1], f.write)
            elif kind == "mlsd":
                for name, facts in ftp.mlsd(op[1]):
                    print(json.dumps({"name": name, "facts": facts}))
            elif kind == "size":
                print(json.dumps({"size": ftp.size(op[1])}))
            else:
                print("unknown op %r" % (kind,), file=sys.stderr)
                return 2
        ftp.quit()
    except (ftplib.all_errors) as e:  # noqa: B014
        print("ftplib error: %r" % (e,), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
