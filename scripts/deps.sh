# Sourced by scripts/run and scripts/test: installs whatever Debian packages
# are missing, without starting the services that some of them package.
BUILD_PKGS="build-essential cmake pkg-config ca-certificates libuv1-dev libc-ares-dev libcurl4-openssl-dev libssl-dev zlib1g-dev libjansson-dev libsystemd-dev libcrypt-dev libhiredis-dev libmicrohttpd-dev"
TEST_PKGS="ldnsutils clang clang-format curl ca-certificates libnet-ssleay-perl libclang-rt-14-dev libcmocka-dev openssl postfix nginx-light unbound swaks python3 python3-pytest python3-aiosmtpd python3-dnslib python3-dkim procps iproute2 strace man-db systemd bsd-mailx pflogsumm rsyslog sasl2-bin libsasl2-modules redis-server python3-prometheus-client"

deps_install() {
	local missing="" p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	echo "installing:$missing"
	if [ "$(id -u)" != 0 ]; then
		echo "need root to install:$missing" >&2
		return 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	# Debian's documented way to keep invoke-rc.d from starting the packaged
	# postfix/nginx/unbound, which would take ports the test world uses.
	local prc=/usr/sbin/policy-rc.d had_prc=0
	[ -e "$prc" ] && had_prc=1
	[ "$had_prc" = 0 ] && printf '#!/bin/sh\nexit 101\n' > "$prc" && chmod +x "$prc"
	apt-get update -qq || true
	apt-get install -y -qq --no-install-recommends $missing
	local rc=$?
	[ "$had_prc" = 0 ] && rm -f "$prc"
	return $rc
}
