#!/usr/bin/env bash
# Shows that scripts/check-style catches what it promises: each bad file
# below must fail it, and a good one must pass.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

expect() {  # expect pass|fail NAME CONTENT [WHY]: NAME may have a layer folder
	# (smtp/x.c); a failure must print WHY, so it fails for the reason meant
	mkdir -p "$(dirname "$tmp/$2")"
	printf '%b' "$3" > "$tmp/$2"
	if "$root/scripts/check-style" "$tmp/$2" > "$tmp/out" 2>&1; then got=pass; else got=fail; fi
	if [ "$got" = fail ] && [ -n "${4:-}" ] && ! grep -q "$4" "$tmp/out"; then
		echo "FAIL: $2 failed check-style, but not with \"$4\":"
		cat "$tmp/out"
		fail=1
	elif [ "$got" != "$1" ]; then
		echo "FAIL: $2 should $1 check-style, got $got:"
		cat "$tmp/out"
		fail=1
	else
		echo "ok: $2 ($got)"
	fi
}

expect pass good.c '/* good */\nstatic int f(void)\n{\n\tif (uv_timer_init(l, &t) != 0)\n\t\treturn -1;\n\tn = smtp_conn_write(c, b, 1);\n\treturn n < 0;\n}\n'
expect fail nocomment.c 'static int x;\n'
expect fail banned.c '/* x */\nvoid f(char *d) { strcpy(d, "x"); }\n'
expect fail bare_timer.c '/* x */\nvoid f(void)\n{\n\tuv_timer_init(loop, &t);\n}\n'
expect fail ignored_count.c '/* x */\nvoid f(void)\n{\n\tif (ready)\n\t\tsmtp_conn_write(c, buf, len);\n}\n'
expect fail void_cast.c '/* x */\nvoid f(void)\n{\n\t(void)smtp_tls_write(t, buf, len);\n}\n'
# The layer order: down and sideways within a folder pass, up fails, and so
# does a folder that has no layer.
expect pass relay/daemon/down.c '/* x */\n#include "relay/core/log.h"\n#include "sts/tlsrpt/tlsrpt.h"\n#include "relay/daemon/relay.h"\n'
expect pass sts/down.c '/* x */\n#include "relay/net/dns.h"\n#include "sts/policy.h"\n'
expect fail smtp/upward.c '/* x */\n#include "smtp/reply.h"\n#include "relay/daemon/scheduler.h"\n' 'is above'
expect fail relay/core/upward.h '/* x */\n#include "queue/queue.h"\n' 'is above'
expect fail sts/upward.c '/* x */\n#include "sts/tlsrpt/tlsrpt.h"\n' 'is above'
expect fail relay/daemon/upward.c '/* x */\n#include "relay/cli/cli.h"\n' 'is above'
expect fail queue/nowhere.c '/* x */\n#include "relay/misc/thing.h"\n' 'in no layer'
exit $fail
