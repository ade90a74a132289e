/* The configuration file parser: bytes in, struct config out, with a
 * "FILE:LINE: reason" error; plus defaults, file loading and mynetworks. */
#include "relay/core/config.h"
#include "relay/core/b64.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CONFIG_LINE_MAX 4096          /* bytes per line, terminator excluded */
#define CONFIG_FILE_MAX (1024 * 1024) /* whole file */
#define CONFIG_ITEM_MAX 128           /* one element of a comma list */
#define CONFIG_SHOW_MAX 60            /* bytes of a value quoted in an error */

/* Upper bounds keep later arithmetic (now + duration, size + headers) far
 * from overflow and catch typos such as an extra digit or two. */
#define MAX_MESSAGE_SIZE (UINT64_C(1) << 40) /* 1 TiB */
#define MAX_FETCH_TIMEOUT_S (24 * 3600)
#define MAX_QUEUE_LIFETIME_S (365 * 86400)
#define MAX_RETRY_STEP_S (30 * 86400)
#define MAX_RETENTION_S (3650 * 86400)
#define MAX_CONN_PER_DOMAIN 10000
#define MAX_SESSIONS 1000000

/* ---- small scanners ------------------------------------------------------ */

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Copies at most dstlen-1 bytes and always terminates; the callers check
 * lengths first, so a cut here is only a safety net. */
static void copy_str(char *dst, size_t dstlen, const char *src)
{
	size_t n = strlen(src);

	if (dstlen == 0)
		return;
	if (n >= dstlen)
		n = dstlen - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* Decimal digits only (no sign, no blanks), at least one, no overflow.
 * Advances *p past the digits. */
static int scan_u64(const char **p, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return -1;
	while (*s >= '0' && *s <= '9') {
		unsigned d = (unsigned)(*s - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
		s++;
	}
	*p = s;
	*out = v;
	return 0;
}

/* A whole string that is a decimal number in [lo, hi]. */
static int parse_uint_range(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	uint64_t v;

	if (scan_u64(&s, &v) < 0 || *s != '\0' || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int mul_checked(uint64_t a, uint64_t b, uint64_t *out)
{
	if (b != 0 && a > UINT64_MAX / b)
		return -1;
	*out = a * b;
	return 0;
}

int config_parse_duration(const char *s, uint64_t *out_seconds)
{
	uint64_t v, unit = 1;

	if (s == NULL || out_seconds == NULL || scan_u64(&s, &v) < 0)
		return -1;
	switch (*s) {
	case '\0':
		unit = 1;
		break;
	case 's':
		unit = 1;
		s++;
		break;
	case 'm':
		unit = 60;
		s++;
		break;
	case 'h':
		unit = 3600;
		s++;
		break;
	case 'd':
		unit = 86400;
		s++;
		break;
	case 'w':
		unit = 7 * 86400;
		s++;
		break;
	default:
		return -1;
	}
	if (*s != '\0' || mul_checked(v, unit, &v) < 0)
		return -1;
	*out_seconds = v;
	return 0;
}

int config_parse_size(const char *s, uint64_t *out_bytes)
{
	uint64_t v, unit = 1;

	if (s == NULL || out_bytes == NULL || scan_u64(&s, &v) < 0)
		return -1;
	switch (*s) {
	case '\0':
		unit = 1;
		break;
	case 'k':
	case 'K':
		unit = UINT64_C(1) << 10;
		s++;
		break;
	case 'm':
	case 'M':
		unit = UINT64_C(1) << 20;
		s++;
		break;
	case 'g':
	case 'G':
		unit = UINT64_C(1) << 30;
		s++;
		break;
	default:
		return -1;
	}
	if (*s != '\0' || mul_checked(v, unit, &v) < 0)
		return -1;
	*out_bytes = v;
	return 0;
}

/* Takes the next comma-separated element of a list into item, blanks
 * trimmed. Returns 1 with an element, 0 at the end, -1 on an empty or
 * oversized element (why says which). */
static int next_item(const char **p, char *item, size_t itemlen, char *why, size_t whylen)
{
	const char *s = *p, *e, *end;
	size_t n;

	if (*s == '\0')
		return 0;
	end = strchr(s, ',');
	if (end == NULL)
		end = s + strlen(s);
	e = end;
	while (s < e && is_blank(*s))
		s++;
	while (e > s && is_blank(e[-1]))
		e--;
	n = (size_t)(e - s);
	if (n == 0) {
		snprintf(why, whylen, "empty list element");
		return -1;
	}
	if (n >= itemlen) {
		snprintf(why, whylen, "list element longer than %zu bytes", itemlen - 1);
		return -1;
	}
	memcpy(item, s, n);
	item[n] = '\0';
	/* A trailing comma leaves an empty last element: report it, not end. */
	*p = *end == ',' ? end + 1 : end;
	if (*end == ',' && **p == '\0') {
		snprintf(why, whylen, "empty list element");
		return -1;
	}
	return 1;
}

static int has_blank(const char *s)
{
	for (; *s != '\0'; s++)
		if (is_blank(*s))
			return 1;
	return 0;
}

/* A DNS name as used for EHLO and DKIM: letters, digits, hyphens and
 * underscores (DKIM selectors, _domainkey) in dot-separated labels of
 * 1..63 bytes, 253 bytes in all, no leading/trailing hyphen. */
static int valid_dns_name(const char *s)
{
	size_t total = strlen(s), label = 0;
	char prev = '.';

	if (total == 0 || total > 253)
		return 0;
	for (; *s != '\0'; s++) {
		char c = *s;

		if (c == '.') {
			if (label == 0 || prev == '-')
				return 0;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			   (c >= '0' && c <= '9') || c == '_' || (c == '-' && label > 0)) {
			if (++label > 63)
				return 0;
		} else {
			return 0;
		}
		prev = c;
	}
	return prev != '.' && prev != '-';
}

/* Free text that ends up in headers and JSON: printable bytes only (UTF-8
 * allowed), since a control byte would break the line it is written into. */
static int printable_text(const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c == 0x7f)
			return 0;
	}
	return 1;
}

/* ---- addresses --------------------------------------------------------- */

static void fill_sockaddr(struct config_addr *a, int family, const void *bin, uint16_t port)
{
	memset(&a->sa, 0, sizeof(a->sa));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a->sa;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, bin, 4);
		a->salen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->sa;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, bin, 16);
		a->salen = sizeof(*sin6);
	}
	a->port = port;
	/* Normalised text ("::0001" -> "::1"); cannot fail for a valid address. */
	if (inet_ntop(family, bin, a->host, sizeof(a->host)) == NULL)
		a->host[0] = '\0';
}

/* "1.2.3.4", "1.2.3.4:25", "[::1]:25" or "[::1]". Numeric
 * only: the relay must not need DNS to find its own sockets or resolvers. */
static int parse_hostport(const char *s, uint16_t defport, struct config_addr *a, char *why,
			  size_t whylen)
{
	char host[CONFIG_ITEM_MAX];
	unsigned char bin[16];
	const char *port = NULL;
	int family;
	uint64_t pv = defport;

	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		size_t n;

		if (rb == NULL) {
			snprintf(why, whylen, "missing ']'");
			return -1;
		}
		n = (size_t)(rb - s - 1);
		if (n >= sizeof(host)) {
			snprintf(why, whylen, "address too long");
			return -1;
		}
		memcpy(host, s + 1, n);
		host[n] = '\0';
		if (rb[1] == ':')
			port = rb + 2;
		else if (rb[1] != '\0') {
			snprintf(why, whylen, "expected ':PORT' after ']'");
			return -1;
		}
		family = AF_INET6;
		if (inet_pton(AF_INET6, host, bin) != 1) {
			snprintf(why, whylen, "not an IPv6 address inside [...]");
			return -1;
		}
	} else {
		const char *colon = strrchr(s, ':');
		size_t n = colon != NULL ? (size_t)(colon - s) : strlen(s);

		/* Without brackets "::1:25" would silently be the address
		 * ::1:25 on the default port; make the operator say which. */
		if (colon != NULL && memchr(s, ':', n) != NULL) {
			snprintf(why, whylen,
				 "IPv6 addresses must be written [ADDR] or [ADDR]:PORT");
			return -1;
		}
		if (n >= sizeof(host)) {
			snprintf(why, whylen, "address too long");
			return -1;
		}
		memcpy(host, s, n);
		host[n] = '\0';
		if (colon != NULL)
			port = colon + 1;
		family = AF_INET;
		if (inet_pton(AF_INET, host, bin) != 1) {
			snprintf(why, whylen, "not a numeric IPv4 or IPv6 address");
			return -1;
		}
	}
	if (port != NULL && parse_uint_range(port, 1, 65535, &pv) < 0) {
		snprintf(why, whylen, "port must be a number from 1 to 65535");
		return -1;
	}
	fill_sockaddr(a, family, bin, (uint16_t)pv);
	return 0;
}

static int parse_addr_list(const char *v, uint16_t defport, struct config_addr *out, size_t max,
			   size_t *nout, char *why, size_t whylen)
{
	char item[CONFIG_ITEM_MAX];
	size_t n = 0;
	int r;

	while ((r = next_item(&v, item, sizeof(item), why, whylen)) > 0) {
		if (n == max) {
			snprintf(why, whylen, "more than %zu addresses", max);
			return -1;
		}
		if (parse_hostport(item, defport, &out[n], why, whylen) < 0)
			return -1;
		for (size_t i = 0; i < n; i++) {
			if (out[i].salen == out[n].salen &&
			    memcmp(&out[i].sa, &out[n].sa, out[n].salen) == 0) {
				snprintf(why, whylen, "address %s listed twice", item);
				return -1;
			}
		}
		n++;
	}
	if (r < 0)
		return -1;
	*nout = n;
	return 0;
}

/* Clears the bits beyond the prefix so that 10.1.2.3/8 means 10.0.0.0/8. */
static void mask_prefix(uint8_t *addr, size_t alen, unsigned prefix)
{
	for (size_t i = 0; i < alen; i++) {
		unsigned bit = (unsigned)i * 8;

		if (prefix >= bit + 8)
			continue;
		if (prefix <= bit)
			addr[i] = 0;
		else
			addr[i] &= (uint8_t)(0xff << (8 - (prefix - bit)));
	}
}

static int parse_network(const char *s, struct config_network *net, char *why, size_t whylen)
{
	char host[CONFIG_ITEM_MAX];
	const char *slash = strchr(s, '/');
	size_t n = slash != NULL ? (size_t)(slash - s) : strlen(s);
	unsigned maxbits;
	uint64_t pv;

	if (n >= sizeof(host)) {
		snprintf(why, whylen, "address too long");
		return -1;
	}
	memcpy(host, s, n);
	host[n] = '\0';
	memset(net, 0, sizeof(*net));
	if (inet_pton(AF_INET, host, net->addr) == 1) {
		net->family = AF_INET;
		maxbits = 32;
	} else if (inet_pton(AF_INET6, host, net->addr) == 1) {
		net->family = AF_INET6;
		maxbits = 128;
	} else {
		snprintf(why, whylen, "not a numeric IPv4 or IPv6 address");
		return -1;
	}
	pv = maxbits;
	if (slash != NULL && parse_uint_range(slash + 1, 0, maxbits, &pv) < 0) {
		snprintf(why, whylen, "prefix length must be a number from 0 to %u", maxbits);
		return -1;
	}
	net->prefix = (unsigned)pv;
	mask_prefix(net->addr, maxbits / 8, net->prefix);
	return 0;
}

/* ---- one setter per key -------------------------------------------------- */

typedef int (*setter_fn)(struct config *c, const char *v, char *why, size_t whylen);

static int set_listen(struct config *c, const char *v, char *why, size_t whylen)
{
	return parse_addr_list(v, 25, c->listen, CONFIG_MAX_LISTEN, &c->nlisten, why, whylen);
}

static int set_dns_servers(struct config *c, const char *v, char *why, size_t whylen)
{
	return parse_addr_list(v, 53, c->dns_servers, CONFIG_MAX_DNS, &c->ndns_servers, why,
			       whylen);
}

static int set_path(char *dst, size_t dstlen, const char *v, char *why, size_t whylen)
{
	if (strlen(v) >= dstlen) {
		snprintf(why, whylen, "path longer than %zu bytes", dstlen - 1);
		return -1;
	}
	copy_str(dst, dstlen, v);
	return 0;
}

static int set_spool_dir(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_path(c->spool_dir, sizeof(c->spool_dir), v, why, whylen);
}

static int set_ca_file(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_path(c->ca_file, sizeof(c->ca_file), v, why, whylen);
}

static int set_dkim_key_file(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_path(c->dkim_key_file, sizeof(c->dkim_key_file), v, why, whylen);
}

static int set_dns_name(char *dst, size_t dstlen, const char *v, char *why, size_t whylen)
{
	if (strlen(v) >= dstlen || !valid_dns_name(v)) {
		snprintf(why, whylen, "not a valid domain name");
		return -1;
	}
	copy_str(dst, dstlen, v);
	return 0;
}

static int set_hostname(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_dns_name(c->hostname, sizeof(c->hostname), v, why, whylen);
}

static int set_dkim_domain(struct config *c, const char *v, char *why, size_t whylen)
{
	if (v[0] == '\0') {
		c->dkim_domain[0] = '\0';
		return 0;
	}
	return set_dns_name(c->dkim_domain, sizeof(c->dkim_domain), v, why, whylen);
}

static int set_dkim_selector(struct config *c, const char *v, char *why, size_t whylen)
{
	if (v[0] == '\0') {
		c->dkim_selector[0] = '\0';
		return 0;
	}
	return set_dns_name(c->dkim_selector, sizeof(c->dkim_selector), v, why, whylen);
}

static int set_mynetworks(struct config *c, const char *v, char *why, size_t whylen)
{
	char item[CONFIG_ITEM_MAX];
	size_t n = 0;
	int r;

	while ((r = next_item(&v, item, sizeof(item), why, whylen)) > 0) {
		if (n == CONFIG_MAX_NETWORKS) {
			snprintf(why, whylen, "more than %d networks", CONFIG_MAX_NETWORKS);
			return -1;
		}
		if (parse_network(item, &c->mynetworks[n], why, whylen) < 0)
			return -1;
		n++;
	}
	if (r < 0)
		return -1;
	c->nmynetworks = n;
	return 0;
}

static int set_max_message_size(struct config *c, const char *v, char *why, size_t whylen)
{
	uint64_t b;

	if (config_parse_size(v, &b) < 0) {
		snprintf(why, whylen, "not a size (bytes, or a number with k, M or G)");
		return -1;
	}
	if (b == 0 || b > MAX_MESSAGE_SIZE) {
		snprintf(why, whylen, "must be from 1 byte to 1024G");
		return -1;
	}
	c->max_message_size = b;
	return 0;
}

static int set_port(uint16_t *dst, const char *v, char *why, size_t whylen)
{
	uint64_t p;

	if (parse_uint_range(v, 1, 65535, &p) < 0) {
		snprintf(why, whylen, "port must be a number from 1 to 65535");
		return -1;
	}
	*dst = (uint16_t)p;
	return 0;
}

static int set_smtp_port(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_port(&c->smtp_port, v, why, whylen);
}

static int set_sts_https_port(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_port(&c->sts_https_port, v, why, whylen);
}

/* A duration within [lo, hi] seconds. */
static int get_duration(const char *v, uint64_t lo, uint64_t hi, uint64_t *out, char *why,
			size_t whylen)
{
	uint64_t s;

	if (config_parse_duration(v, &s) < 0) {
		snprintf(why, whylen, "not a duration (e.g. 30s, 5m, 2h, 5d, 1w)");
		return -1;
	}
	if (s < lo || s > hi) {
		snprintf(why, whylen, "must be from %llus to %llus", (unsigned long long)lo,
			 (unsigned long long)hi);
		return -1;
	}
	*out = s;
	return 0;
}

static int set_sts_fetch_timeout(struct config *c, const char *v, char *why, size_t whylen)
{
	uint64_t s;

	if (get_duration(v, 1, MAX_FETCH_TIMEOUT_S, &s, why, whylen) < 0)
		return -1;
	c->sts_fetch_timeout_ms = s * 1000;
	return 0;
}

static int set_queue_lifetime(struct config *c, const char *v, char *why, size_t whylen)
{
	/* 0 is allowed: bounce at the first temporary failure, as in Postfix. */
	return get_duration(v, 0, MAX_QUEUE_LIFETIME_S, &c->queue_lifetime_s, why, whylen);
}

static int set_tlsrpt_retention(struct config *c, const char *v, char *why, size_t whylen)
{
	/* Under a day the previous day's sessions could vanish before the
	 * daily report is built from them. */
	return get_duration(v, 86400, MAX_RETENTION_S, &c->tlsrpt_retention_s, why, whylen);
}

static int set_retry_schedule(struct config *c, const char *v, char *why, size_t whylen)
{
	char item[CONFIG_ITEM_MAX];
	uint64_t steps[CONFIG_MAX_RETRY];
	size_t n = 0;
	int r;

	while ((r = next_item(&v, item, sizeof(item), why, whylen)) > 0) {
		if (n == CONFIG_MAX_RETRY) {
			snprintf(why, whylen, "more than %d steps", CONFIG_MAX_RETRY);
			return -1;
		}
		/* A 0 step would retry in a busy loop. */
		if (get_duration(item, 1, MAX_RETRY_STEP_S, &steps[n], why, whylen) < 0)
			return -1;
		n++;
	}
	if (r < 0)
		return -1;
	memcpy(c->retry_schedule_s, steps, n * sizeof(steps[0]));
	c->nretry_schedule = n;
	return 0;
}

static int set_unsigned(unsigned *dst, const char *v, uint64_t lo, uint64_t hi, char *why,
			size_t whylen)
{
	uint64_t n;

	if (parse_uint_range(v, lo, hi, &n) < 0) {
		snprintf(why, whylen, "must be a number from %llu to %llu", (unsigned long long)lo,
			 (unsigned long long)hi);
		return -1;
	}
	*dst = (unsigned)n;
	return 0;
}

static int set_max_connections_per_domain(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_unsigned(&c->max_connections_per_domain, v, 1, MAX_CONN_PER_DOMAIN, why, whylen);
}

static int set_max_sessions(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_unsigned(&c->max_sessions, v, 1, MAX_SESSIONS, why, whylen);
}

/* A value from a fixed list of words; returns the word's value, or -1 with
 * "must be EXPECT" in why. Values are never negative. */
struct config_word {
	const char *word;
	int value;
};

static int pick_word(const struct config_word *w, size_t n, const char *v, const char *expect,
		     char *why, size_t whylen)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(v, w[i].word) == 0)
			return w[i].value;
	snprintf(why, whylen, "must be %s", expect);
	return -1;
}

#define PICK(tbl, v, expect, why, whylen) \
	pick_word((tbl), sizeof(tbl) / sizeof((tbl)[0]), (v), (expect), (why), (whylen))

static int set_tls_default(struct config *c, const char *v, char *why, size_t whylen)
{
	/* may-plain was a second name for the same behaviour; kept so that
	 * existing files still load. */
	static const struct config_word words[] = {
		{ "opportunistic", TLS_DEFAULT_OPPORTUNISTIC },
		{ "may-plain", TLS_DEFAULT_OPPORTUNISTIC },
		{ "encrypt", TLS_DEFAULT_ENCRYPT },
		{ "verify", TLS_DEFAULT_VERIFY },
	};
	int x = PICK(words, v, "opportunistic (alias may-plain), encrypt or verify", why, whylen);

	if (x < 0)
		return -1;
	c->tls_default = (enum tls_default)x;
	return 0;
}

/* Postfix's spelling of booleans (and on/off where DESIGN.md uses it). */
static int set_bool(bool *dst, const char *v, const char *expect, char *why, size_t whylen)
{
	static const struct config_word words[] = {
		{ "yes", 1 },
		{ "no", 0 },
		{ "on", 1 },
		{ "off", 0 },
	};
	int x = PICK(words, v, expect, why, whylen);

	if (x < 0)
		return -1;
	*dst = x == 1;
	return 0;
}

static int set_dane(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_bool(&c->dane, v, "on or off", why, whylen);
}

static int set_tls_policy_file(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_path(c->tls_policy_file, sizeof(c->tls_policy_file), v, why, whylen);
}

static int set_log_format(struct config *c, const char *v, char *why, size_t whylen)
{
	static const struct config_word words[] = {
		{ "text", CONFIG_LOG_TEXT },
		{ "json", CONFIG_LOG_JSON },
	};
	int x = PICK(words, v, "text or json", why, whylen);

	if (x < 0)
		return -1;
	c->log_format = (enum config_log_format)x;
	return 0;
}

static int set_log_target(struct config *c, const char *v, char *why, size_t whylen)
{
	static const struct config_word words[] = {
		{ "stderr", CONFIG_LOG_TARGET_STDERR },
		{ "syslog", CONFIG_LOG_TARGET_SYSLOG },
		{ "journal", CONFIG_LOG_TARGET_JOURNAL },
	};
	int x = PICK(words, v, "stderr, syslog or journal", why, whylen);

	if (x < 0)
		return -1;
	c->log_target = (enum config_log_target)x;
	return 0;
}

/* A mailbox local@domain: the full RFC 5321 check is smtp/address.c's (a
 * later layer); here the shape, so a typo fails at load, not at the first
 * cron mail. */
static int set_alias_root(struct config *c, const char *v, char *why, size_t whylen)
{
	const char *at = strrchr(v, '@');

	if (v[0] == '\0') {
		c->alias_root[0] = '\0';
		return 0;
	}
	if (strlen(v) >= sizeof(c->alias_root) || at == NULL || at == v || at[1] == '\0' ||
	    strpbrk(v, "<>") != NULL) {
		snprintf(why, whylen, "must be a full address like admin@example.org");
		return -1;
	}
	copy_str(c->alias_root, sizeof(c->alias_root), v);
	return 0;
}

static int set_text(char *dst, size_t dstlen, const char *v, char *why, size_t whylen)
{
	if (strlen(v) >= dstlen) {
		snprintf(why, whylen, "longer than %zu bytes", dstlen - 1);
		return -1;
	}
	copy_str(dst, dstlen, v);
	return 0;
}

static int set_tlsrpt_org_name(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_text(c->tlsrpt_org_name, sizeof(c->tlsrpt_org_name), v, why, whylen);
}

/* RFC 5322 atext, the characters of a dot-atom local part. */
static int is_atext(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* The report contact: a plain local@domain (dot-atom local part, a DNS
 * name). Stricter than an SMTP path on purpose: it is the report's
 * contact-info, the From: and envelope sender of report mail, and its
 * domain is the submitter in the TLS-Report-Submitter header and the
 * report file name (RFC 8460 §5.1, §5.3), so quoted local parts and
 * address literals have no place in it. */
static int valid_contact(const char *v)
{
	const char *at = strrchr(v, '@');
	size_t local, i;

	if (at == NULL || !valid_dns_name(at + 1))
		return 0;
	local = (size_t)(at - v);
	if (local == 0 || local > 64 || v[0] == '.' || v[local - 1] == '.')
		return 0;
	for (i = 0; i < local; i++) {
		if (v[i] == '.' ? v[i + 1] == '.' : !is_atext((unsigned char)v[i]))
			return 0;
	}
	return 1;
}

static int set_tlsrpt_contact(struct config *c, const char *v, char *why, size_t whylen)
{
	if (!valid_contact(v)) {
		snprintf(why, whylen, "not an e-mail address (local@domain)");
		return -1;
	}
	return set_text(c->tlsrpt_contact, sizeof(c->tlsrpt_contact), v, why, whylen);
}

/* "HH:MM" (or "H:MM"), UTC. */
static int set_tlsrpt_send_at(struct config *c, const char *v, char *why, size_t whylen)
{
	const char *p = v;
	uint64_t h, m;
	size_t hlen, mlen;

	if (scan_u64(&p, &h) < 0)
		goto bad;
	hlen = (size_t)(p - v);
	if (*p++ != ':')
		goto bad;
	v = p;
	if (scan_u64(&p, &m) < 0 || *p != '\0')
		goto bad;
	mlen = (size_t)(p - v);
	if (hlen > 2 || mlen != 2 || h > 23 || m > 59)
		goto bad;
	c->tlsrpt_send_at_min = (unsigned)(h * 60 + m);
	return 0;
bad:
	snprintf(why, whylen, "must be a UTC time HH:MM from 00:00 to 23:59");
	return -1;
}

/* POSIX portable user names, so the value is safe in getpwnam and logs. */
static int set_user(struct config *c, const char *v, char *why, size_t whylen)
{
	size_t n = strlen(v);

	if (n >= sizeof(c->user) || v[0] == '-') {
		snprintf(why, whylen, "not a valid user name");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		char ch = v[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-')) {
			snprintf(why, whylen, "not a valid user name");
			return -1;
		}
	}
	copy_str(c->user, sizeof(c->user), v);
	return 0;
}

/* "ADDR:PORT", "[ADDR]:PORT", or "PORT" alone for 127.0.0.1: the metrics
 * carry nothing secret, but nothing beyond this host needs them unless the
 * operator says so. "" turns the endpoint off. */
static int set_metrics_listen(struct config *c, const char *v, char *why, size_t whylen)
{
	uint64_t pv;
	char buf[CONFIG_ITEM_MAX + 16];

	memset(&c->metrics_listen, 0, sizeof(c->metrics_listen));
	if (v[0] == '\0')
		return 0;
	if (parse_uint_range(v, 1, 65535, &pv) == 0) {
		snprintf(buf, sizeof(buf), "127.0.0.1:%s", v);
		v = buf;
	}
	if (strchr(v, ':') == NULL || (v[0] == '[' && strstr(v, "]:") == NULL)) {
		snprintf(why, whylen, "needs a port: ADDR:PORT, [ADDR]:PORT or PORT");
		return -1;
	}
	return parse_hostport(v, 0, &c->metrics_listen, why, whylen);
}

/* Copies s[0..n) into out, %XX decoded; -1 on a bad escape, a NUL or a
 * result that does not fit. */
static int url_decode(const char *s, size_t n, char *out, size_t outlen)
{
	size_t o = 0, i;

	for (i = 0; i < n; i++) {
		int ch = (unsigned char)s[i];

		if (ch == '%') {
			ch = core_pct_octet(s + i, n - i);
			if (ch <= 0) /* a bad escape, or %00 */
				return -1;
			i += 2;
		}
		if (o + 1 >= outlen)
			return -1;
		out[o++] = (char)ch;
	}
	out[o] = '\0';
	return 0;
}

int config_parse_redis_url(const char *url, struct config_redis *out, char *why, size_t whylen)
{
	struct config_redis r;
	const char *p, *at, *hostend, *slash;
	uint64_t pv;
	char num[16];

	memset(&r, 0, sizeof(r));
	if (url[0] == '\0') {
		*out = r;
		return 0;
	}
	if (strncmp(url, "rediss://", 9) == 0) {
		snprintf(why, whylen,
			 "TLS to Redis (rediss://) is not supported: use redis:// to a Redis on "
			 "a trusted network, or a tunnel");
		return -1;
	}
	if (strncmp(url, "redis://", 8) != 0) {
		snprintf(why, whylen, "must start with redis://");
		return -1;
	}
	p = url + 8;
	slash = strchr(p, '/');
	at = memchr(p, '@', slash != NULL ? (size_t)(slash - p) : strlen(p));
	if (at != NULL) {
		const char *colon = memchr(p, ':', (size_t)(at - p));

		if (colon == NULL) {
			snprintf(why, whylen, "userinfo must be USER:PASSWORD or :PASSWORD");
			return -1;
		}
		if (url_decode(p, (size_t)(colon - p), r.user, sizeof(r.user)) != 0 ||
		    url_decode(colon + 1, (size_t)(at - colon - 1), r.password,
			       sizeof(r.password)) != 0 ||
		    r.password[0] == '\0') {
			snprintf(why, whylen,
				 "bad user or password in the URL (%%XX escapes, "
				 "at most 255 bytes)");
			return -1;
		}
		p = at + 1;
	}
	r.port = 6379;
	if (*p == '[') {
		hostend = strchr(p, ']');
		if (hostend == NULL || (size_t)(hostend - p - 1) >= sizeof(r.host) ||
		    hostend == p + 1) {
			snprintf(why, whylen, "bad [IPv6] host");
			return -1;
		}
		memcpy(r.host, p + 1, (size_t)(hostend - p - 1));
		r.host[hostend - p - 1] = '\0';
		{
			unsigned char bin[16];

			if (inet_pton(AF_INET6, r.host, bin) != 1) {
				snprintf(why, whylen, "not an IPv6 address inside [...]");
				return -1;
			}
		}
		hostend++;
	} else {
		hostend = p + strcspn(p, ":/");
		if (hostend == p || (size_t)(hostend - p) >= sizeof(r.host)) {
			snprintf(why, whylen, "missing or too long host");
			return -1;
		}
		memcpy(r.host, p, (size_t)(hostend - p));
		r.host[hostend - p] = '\0';
		if (!valid_dns_name(r.host)) {
			snprintf(why, whylen, "host is not a name or an address");
			return -1;
		}
	}
	p = hostend;
	if (*p == ':') {
		size_t n = strcspn(p + 1, "/");

		if (n == 0 || n >= sizeof(num)) {
			snprintf(why, whylen, "port must be a number from 1 to 65535");
			return -1;
		}
		memcpy(num, p + 1, n);
		num[n] = '\0';
		if (parse_uint_range(num, 1, 65535, &pv) < 0) {
			snprintf(why, whylen, "port must be a number from 1 to 65535");
			return -1;
		}
		r.port = (uint16_t)pv;
		p += 1 + n;
	}
	if (*p == '/' && p[1] != '\0') {
		if (parse_uint_range(p + 1, 0, 1000000, &pv) < 0) {
			snprintf(why, whylen, "database must be a number (redis://HOST:PORT/DB)");
			return -1;
		}
		r.db = (unsigned)pv;
	} else if (*p != '\0' && strcmp(p, "/") != 0) {
		snprintf(why, whylen, "unexpected text after the host");
		return -1;
	}
	*out = r;
	return 0;
}

static int set_redis_url(struct config *c, const char *v, char *why, size_t whylen)
{
	return config_parse_redis_url(v, &c->redis, why, whylen);
}

/* Part of Redis key names and log lines: letters, digits, '.', '_', '-'. */
static int set_node_name(struct config *c, const char *v, char *why, size_t whylen)
{
	size_t n = strlen(v), i;

	if (n == 0) {
		c->node_name[0] = '\0';
		return 0;
	}
	if (n >= sizeof(c->node_name)) {
		snprintf(why, whylen, "longer than %zu bytes", sizeof(c->node_name) - 1);
		return -1;
	}
	for (i = 0; i < n; i++) {
		char ch = v[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-')) {
			snprintf(why, whylen, "only letters, digits, '.', '_' and '-'");
			return -1;
		}
	}
	copy_str(c->node_name, sizeof(c->node_name), v);
	return 0;
}

const char *config_node_name(const struct config *cfg)
{
	return cfg->node_name[0] != '\0' ? cfg->node_name : cfg->hostname;
}

/* An all-digit top label: an IPv4 address, not a host name. */
static int numeric_top_label(const char *name)
{
	const char *top = strrchr(name, '.');

	top = top != NULL ? top + 1 : name;
	return strspn(top, "0123456789") == strlen(top);
}

/* "[host]:port", "[host]", "host:port" or "host": a DNS name (never an
 * address: TLS to the relay host is verified against its name). Brackets
 * mean no MX lookup (Postfix). Port 465 is implicit TLS, as RFC 8314 §3.3
 * assigns it to submission over TLS; every other port speaks STARTTLS. */
static int set_relayhost(struct config *c, const char *v, char *why, size_t whylen)
{
	char host[sizeof(c->relayhost)];
	const char *end, *port = NULL;
	uint64_t pv = 25;
	bool bracket = v[0] == '[';
	size_t n, i;

	if (v[0] == '\0') {
		c->relayhost[0] = '\0';
		c->relayhost_port = 0;
		c->relayhost_mx = c->relayhost_implicit_tls = false;
		return 0;
	}
	if (bracket) {
		end = strchr(v, ']');
		if (end == NULL) {
			snprintf(why, whylen, "missing ']'");
			return -1;
		}
		v++;
		if (end[1] == ':')
			port = end + 2;
		else if (end[1] != '\0')
			goto bad;
	} else {
		end = strchr(v, ':');
		if (end != NULL)
			port = end + 1;
		else
			end = v + strlen(v);
	}
	n = (size_t)(end - v);
	if (n >= sizeof(host))
		goto bad;
	memcpy(host, v, n);
	host[n] = '\0';
	if (n > 0 && host[n - 1] == '.')
		host[--n] = '\0';
	for (i = 0; i < n; i++)
		host[i] = (char)((host[i] >= 'A' && host[i] <= 'Z') ? host[i] - 'A' + 'a'
								    : host[i]);
	if (!valid_dns_name(host) || numeric_top_label(host))
		goto bad;
	if (port != NULL && parse_uint_range(port, 1, 65535, &pv) < 0) {
		snprintf(why, whylen, "port must be a number from 1 to 65535");
		return -1;
	}
	copy_str(c->relayhost, sizeof(c->relayhost), host);
	c->relayhost_port = (uint16_t)pv;
	c->relayhost_mx = !bracket;
	c->relayhost_implicit_tls = pv == 465;
	return 0;
bad:
	snprintf(why, whylen,
		 "must be [host]:port, [host], host:port or host, with a host name (not an "
		 "address: TLS is verified against the name)");
	return -1;
}

static int set_relayhost_auth_file(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_path(c->relayhost_auth_file, sizeof(c->relayhost_auth_file), v, why, whylen);
}

static int set_submission_listen(struct config *c, const char *v, char *why, size_t whylen)
{
	return parse_addr_list(v, 587, c->submission_listen, CONFIG_MAX_LISTEN,
			       &c->nsubmission_listen, why, whylen);
}

static int set_smtps_listen(struct config *c, const char *v, char *why, size_t whylen)
{
	return parse_addr_list(v, 465, c->smtps_listen, CONFIG_MAX_LISTEN, &c->nsmtps_listen, why,
			       whylen);
}

static int set_tls_cert_file(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_path(c->tls_cert_file, sizeof(c->tls_cert_file), v, why, whylen);
}

static int set_tls_key_file(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_path(c->tls_key_file, sizeof(c->tls_key_file), v, why, whylen);
}

static int set_auth_users_file(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_path(c->auth_users_file, sizeof(c->auth_users_file), v, why, whylen);
}

static int set_received_show_auth(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_bool(&c->received_show_auth, v, "yes or no", why, whylen);
}

static int set_max_sessions_per_ip(struct config *c, const char *v, char *why, size_t whylen)
{
	return set_unsigned(&c->max_sessions_per_ip, v, 1, MAX_SESSIONS, why, whylen);
}

enum key_flags {
	KEY_EMPTY_OK = 1,  /* "key =" is meaningful (means: unset/none) */
	KEY_NO_BLANKS = 2, /* a value with inner blanks is a mistake */
};

struct key_def {
	const char *name;
	setter_fn set;
	unsigned flags;
};

/* The DESIGN.md table, in its order. */
static const struct key_def keys[] = {
	{ "listen", set_listen, 0 },
	{ "spool_dir", set_spool_dir, 0 },
	{ "hostname", set_hostname, KEY_NO_BLANKS },
	{ "mynetworks", set_mynetworks, KEY_EMPTY_OK },
	{ "max_message_size", set_max_message_size, KEY_NO_BLANKS },
	{ "dns_servers", set_dns_servers, KEY_EMPTY_OK },
	{ "ca_file", set_ca_file, KEY_EMPTY_OK },
	{ "smtp_port", set_smtp_port, KEY_NO_BLANKS },
	{ "sts_https_port", set_sts_https_port, KEY_NO_BLANKS },
	{ "sts_fetch_timeout", set_sts_fetch_timeout, KEY_NO_BLANKS },
	{ "tls_default", set_tls_default, KEY_NO_BLANKS },
	{ "queue_lifetime", set_queue_lifetime, KEY_NO_BLANKS },
	{ "retry_schedule", set_retry_schedule, 0 },
	{ "max_connections_per_domain", set_max_connections_per_domain, KEY_NO_BLANKS },
	{ "tlsrpt_org_name", set_tlsrpt_org_name, 0 },
	{ "tlsrpt_contact", set_tlsrpt_contact, 0 },
	{ "tlsrpt_send_at", set_tlsrpt_send_at, KEY_NO_BLANKS },
	{ "max_sessions", set_max_sessions, KEY_NO_BLANKS },
	{ "user", set_user, KEY_EMPTY_OK | KEY_NO_BLANKS },
	{ "tlsrpt_retention", set_tlsrpt_retention, KEY_NO_BLANKS },
	{ "dkim_domain", set_dkim_domain, KEY_EMPTY_OK | KEY_NO_BLANKS },
	{ "dkim_selector", set_dkim_selector, KEY_EMPTY_OK | KEY_NO_BLANKS },
	{ "dkim_key_file", set_dkim_key_file, KEY_EMPTY_OK },
	{ "log_format", set_log_format, KEY_NO_BLANKS },
	{ "log_target", set_log_target, KEY_NO_BLANKS },
	{ "alias_root", set_alias_root, KEY_EMPTY_OK | KEY_NO_BLANKS },
	{ "metrics_listen", set_metrics_listen, KEY_EMPTY_OK | KEY_NO_BLANKS },
	{ "redis_url", set_redis_url, KEY_EMPTY_OK | KEY_NO_BLANKS },
	{ "node_name", set_node_name, KEY_EMPTY_OK | KEY_NO_BLANKS },
	{ "dane", set_dane, KEY_NO_BLANKS },
	{ "tls_policy_file", set_tls_policy_file, KEY_EMPTY_OK },
	{ "relayhost", set_relayhost, KEY_EMPTY_OK | KEY_NO_BLANKS },
	{ "relayhost_auth_file", set_relayhost_auth_file, KEY_EMPTY_OK },
	{ "submission_listen", set_submission_listen, KEY_EMPTY_OK },
	{ "smtps_listen", set_smtps_listen, KEY_EMPTY_OK },
	{ "tls_cert_file", set_tls_cert_file, KEY_EMPTY_OK },
	{ "tls_key_file", set_tls_key_file, KEY_EMPTY_OK },
	{ "auth_users_file", set_auth_users_file, 0 },
	{ "received_show_auth", set_received_show_auth, KEY_NO_BLANKS },
	{ "max_sessions_per_ip", set_max_sessions_per_ip, KEY_NO_BLANKS },
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))
_Static_assert(NKEYS <= CONFIG_MAX_KEYS, "raise CONFIG_MAX_KEYS in config.h");

static size_t key_index(const char *name)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].name, name) == 0)
			return i;
	return NKEYS;
}

/* ---- defaults, parse, load ------------------------------------------------ */

static void set_report_defaults(struct config *c, int org, int contact)
{
	if (org)
		copy_str(c->tlsrpt_org_name, sizeof(c->tlsrpt_org_name), c->hostname);
	if (contact)
		snprintf(c->tlsrpt_contact, sizeof(c->tlsrpt_contact), "postmaster@%s",
			 c->hostname);
}

void config_defaults(struct config *cfg)
{
	static const uint64_t retry[] = { 300, 600, 1200, 2400, 3600, 7200, 14400 };
	char why[16];

	memset(cfg, 0, sizeof(*cfg));
	if (set_listen(cfg, "127.0.0.1:2525", why, sizeof(why)) < 0)
		cfg->nlisten = 0; /* cannot happen: a constant */
	copy_str(cfg->spool_dir, sizeof(cfg->spool_dir), "/var/spool/stsrelay");
	/* gethostname() may leave the buffer unterminated on truncation. */
	if (gethostname(cfg->hostname, sizeof(cfg->hostname) - 1) < 0 || cfg->hostname[0] == '\0')
		copy_str(cfg->hostname, sizeof(cfg->hostname), "localhost");
	cfg->hostname[sizeof(cfg->hostname) - 1] = '\0';
	if (set_mynetworks(cfg, "127.0.0.0/8, ::1/128", why, sizeof(why)) < 0)
		cfg->nmynetworks = 0; /* cannot happen: a constant */
	cfg->max_message_size = 52428800;
	cfg->ndns_servers = 0;
	cfg->smtp_port = 25;
	cfg->sts_https_port = 443;
	cfg->sts_fetch_timeout_ms = 30000;
	cfg->tls_default = TLS_DEFAULT_OPPORTUNISTIC;
	cfg->dane = true;
	cfg->queue_lifetime_s = 5 * 86400;
	memcpy(cfg->retry_schedule_s, retry, sizeof(retry));
	cfg->nretry_schedule = sizeof(retry) / sizeof(retry[0]);
	cfg->max_connections_per_domain = 10;
	set_report_defaults(cfg, 1, 1);
	cfg->tlsrpt_send_at_min = 15;
	cfg->max_sessions = 1000;
	cfg->tlsrpt_retention_s = 14 * 86400;
	cfg->log_format = CONFIG_LOG_TEXT;
	cfg->log_target = CONFIG_LOG_TARGET_AUTO;
	copy_str(cfg->auth_users_file, sizeof(cfg->auth_users_file), CONFIG_DEFAULT_USERS);
	cfg->max_sessions_per_ip = 50; /* Postfix's smtpd_client_connection_count_limit */
}

bool config_submission_on(const struct config *cfg)
{
	return cfg->nsubmission_listen > 0 || cfg->nsmtps_listen > 0;
}

/* The three listen keys bind sockets of one process: an address in two of
 * them would fail at bind time with a less helpful message. 0, or -1 with
 * the line and reason. */
static int check_listen_overlap(const struct config *c, const unsigned *seen_line, unsigned *line,
				char *reason, size_t rlen)
{
	const struct {
		const char *key;
		const struct config_addr *a;
		size_t n;
	} lists[] = {
		{ "listen", c->listen, c->nlisten },
		{ "submission_listen", c->submission_listen, c->nsubmission_listen },
		{ "smtps_listen", c->smtps_listen, c->nsmtps_listen },
	};
	size_t i, j, x, y;

	for (i = 0; i < 3; i++)
		for (j = i + 1; j < 3; j++)
			for (x = 0; x < lists[i].n; x++)
				for (y = 0; y < lists[j].n; y++) {
					const struct config_addr *a = &lists[i].a[x],
								 *b = &lists[j].a[y];

					if (a->salen != b->salen ||
					    memcmp(&a->sa, &b->sa, a->salen) != 0)
						continue;
					*line = seen_line[key_index(lists[j].key)];
					if (*line == 0)
						*line = seen_line[key_index(lists[i].key)];
					snprintf(reason, rlen, "address %s:%u is in both %s and %s",
						 a->host, a->port, lists[i].key, lists[j].key);
					return -1;
				}
	return 0;
}

/* Quotes a value for an error message: cut to CONFIG_SHOW_MAX bytes, and
 * anything not plain printable ASCII shown as '?', since the message goes
 * to a terminal or log line. */
static void show(char *dst, size_t dstlen, const char *s)
{
	size_t n = 0;

	for (; *s != '\0' && n + 4 < dstlen; s++) {
		unsigned char c = (unsigned char)*s;

		if (n == CONFIG_SHOW_MAX) {
			memcpy(dst + n, "...", 3);
			n += 3;
			break;
		}
		dst[n++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
	}
	dst[n] = '\0';
}

static void set_err(char *err, size_t errlen, const char *fname, unsigned line, const char *reason)
{
	if (err == NULL || errlen == 0)
		return;
	if (line > 0)
		snprintf(err, errlen, "%s:%u: %s", fname, line, reason);
	else
		snprintf(err, errlen, "%s: %s", fname, reason);
}

/* Handles one line (terminator removed, no NUL inside, at most
 * CONFIG_LINE_MAX bytes). Returns 0, or -1 with reason set. */
static int parse_line(struct config *c, char *line, unsigned lineno, unsigned *seen_line,
		      char *reason, size_t rlen)
{
	char *key, *val, *eq, *end, sk[CONFIG_SHOW_MAX + 8], sv[CONFIG_SHOW_MAX + 8];
	char why[160];
	size_t k;

	/* Strip a comment: '#' at the start or after a blank. A '#' glued to
	 * other text (a path like /etc/x#1) stays part of the value. */
	for (char *p = line; *p != '\0'; p++) {
		if (*p == '#' && (p == line || is_blank(p[-1]))) {
			*p = '\0';
			break;
		}
	}
	for (char *p = line; *p != '\0'; p++) {
		unsigned char ch = (unsigned char)*p;

		if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
			snprintf(reason, rlen, "control character 0x%02x in line", ch);
			return -1;
		}
	}
	key = line;
	while (is_blank(*key))
		key++;
	if (*key == '\0')
		return 0; /* blank or comment-only line */
	eq = strchr(key, '=');
	if (eq == NULL) {
		show(sk, sizeof(sk), key);
		snprintf(reason, rlen, "expected 'key = value', got '%s'", sk);
		return -1;
	}
	end = eq;
	while (end > key && is_blank(end[-1]))
		end--;
	*end = '\0';
	val = eq + 1;
	while (is_blank(*val))
		val++;
	end = val + strlen(val);
	while (end > val && is_blank(end[-1]))
		end--;
	*end = '\0';

	show(sk, sizeof(sk), key);
	show(sv, sizeof(sv), val);
	if (*key == '\0') {
		snprintf(reason, rlen, "missing key before '=' (value '%s')", sv);
		return -1;
	}
	k = key_index(key);
	if (k == NKEYS) {
		snprintf(reason, rlen, "unknown key '%s'", sk);
		return -1;
	}
	if (seen_line[k] != 0) {
		snprintf(reason, rlen, "key '%s' repeated (first set on line %u)", sk,
			 seen_line[k]);
		return -1;
	}
	seen_line[k] = lineno;
	if (*val == '\0' && !(keys[k].flags & KEY_EMPTY_OK)) {
		snprintf(reason, rlen, "key '%s' needs a value", sk);
		return -1;
	}
	if ((keys[k].flags & KEY_NO_BLANKS) && has_blank(val)) {
		snprintf(reason, rlen, "bad value '%s' for key '%s': unexpected blank", sv, sk);
		return -1;
	}
	if (!printable_text(val)) {
		snprintf(reason, rlen, "bad value '%s' for key '%s': control character", sv, sk);
		return -1;
	}
	why[0] = '\0';
	if (keys[k].set(c, val, why, sizeof(why)) < 0) {
		snprintf(reason, rlen, "bad value '%s' for key '%s': %s", sv, sk, why);
		return -1;
	}
	return 0;
}

int config_parse(struct config *cfg, const char *buf, size_t len, const char *fname, char *err,
		 size_t errlen)
{
	/* Work on a copy so that a failed parse (a bad SIGHUP reload) leaves
	 * the running configuration untouched. */
	struct config c = *cfg;
	unsigned seen_line[NKEYS] = { 0 };
	char line[CONFIG_LINE_MAX + 1];
	char reason[512];
	size_t pos = 0;
	unsigned lineno = 0, dkim_line = 0;
	int ndkim = 0;

	if (fname == NULL)
		fname = "(config)";
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (buf == NULL && len > 0) {
		set_err(err, errlen, fname, 0, "no data");
		return -1;
	}
	if (len > CONFIG_FILE_MAX) {
		snprintf(reason, sizeof(reason), "file larger than %d bytes", CONFIG_FILE_MAX);
		set_err(err, errlen, fname, 0, reason);
		return -1;
	}
	/* An editor's UTF-8 byte order mark is not part of the first key. */
	if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
		pos = 3;
	while (pos < len) {
		const char *s = buf + pos;
		const char *nl = memchr(s, '\n', len - pos);
		size_t n = nl != NULL ? (size_t)(nl - s) : len - pos;

		lineno++;
		pos += n + (nl != NULL);
		if (n > 0 && s[n - 1] == '\r')
			n--; /* CRLF files are fine */
		if (n > CONFIG_LINE_MAX) {
			snprintf(reason, sizeof(reason), "line longer than %d bytes",
				 CONFIG_LINE_MAX);
			set_err(err, errlen, fname, lineno, reason);
			return -1;
		}
		if (memchr(s, '\0', n) != NULL) {
			set_err(err, errlen, fname, lineno, "NUL byte in line");
			return -1;
		}
		memcpy(line, s, n);
		line[n] = '\0';
		if (parse_line(&c, line, lineno, seen_line, reason, sizeof(reason)) < 0) {
			set_err(err, errlen, fname, lineno, reason);
			return -1;
		}
	}

	/* Report identity follows a hostname set in this file, unless the
	 * file names it itself; an empty one (zeroed struct) is filled too. */
	{
		size_t ih = key_index("hostname"), io = key_index("tlsrpt_org_name"),
		       ic = key_index("tlsrpt_contact");
		int host_set = seen_line[ih] != 0;

		set_report_defaults(&c,
				    !seen_line[io] && (host_set || c.tlsrpt_org_name[0] == '\0'),
				    !seen_line[ic] && (host_set || c.tlsrpt_contact[0] == '\0'));
	}

	/* DKIM keys go together: a half-configured signer is an operator
	 * mistake that would otherwise only show when a report is sent. */
	{
		static const char *const dk[] = { "dkim_domain", "dkim_selector", "dkim_key_file" };

		for (size_t i = 0; i < 3; i++) {
			size_t ki = key_index(dk[i]);

			if (seen_line[ki] > dkim_line)
				dkim_line = seen_line[ki];
		}
		ndkim = (c.dkim_domain[0] != '\0') + (c.dkim_selector[0] != '\0') +
			(c.dkim_key_file[0] != '\0');
		if (ndkim != 0 && ndkim != 3) {
			set_err(err, errlen, fname, dkim_line,
				"'dkim_domain', 'dkim_selector' and 'dkim_key_file' must be "
				"set all together or not at all");
			return -1;
		}
	}
	/* Submission is TLS-only (AUTH never in plaintext): no listener
	 * without a certificate, and a certificate comes with its key. */
	{
		size_t ic = key_index("tls_cert_file"), ik = key_index("tls_key_file");
		unsigned sline = seen_line[key_index("submission_listen")];

		if (sline == 0)
			sline = seen_line[key_index("smtps_listen")];
		if (config_submission_on(&c) &&
		    (c.tls_cert_file[0] == '\0' || c.tls_key_file[0] == '\0')) {
			set_err(err, errlen, fname, sline,
				"submission_listen and smtps_listen need tls_cert_file and "
				"tls_key_file (AUTH is offered only over TLS)");
			return -1;
		}
		if ((c.tls_cert_file[0] == '\0') != (c.tls_key_file[0] == '\0')) {
			set_err(err, errlen, fname,
				seen_line[ic] > seen_line[ik] ? seen_line[ic] : seen_line[ik],
				"'tls_cert_file' and 'tls_key_file' must be set together");
			return -1;
		}
		if (check_listen_overlap(&c, seen_line, &sline, reason, sizeof(reason)) != 0) {
			set_err(err, errlen, fname, sline, reason);
			return -1;
		}
	}
	memcpy(c.key_line, seen_line, sizeof(seen_line));
	*cfg = c;
	return 0;
}

unsigned config_key_line(const struct config *cfg, const char *key)
{
	size_t k = key_index(key);

	return k < NKEYS ? cfg->key_line[k] : 0;
}

int config_check_dkim_domain(const struct config *cfg, char *why, size_t whylen)
{
	const char *at = strrchr(cfg->tlsrpt_contact, '@');
	const char *sub = at != NULL ? at + 1 : cfg->tlsrpt_contact;
	const char *dk = cfg->dkim_domain;
	size_t sl = strlen(sub), dl = strlen(dk);

	if (why != NULL && whylen > 0)
		why[0] = '\0';
	if (dl > 0 && dk[dl - 1] == '.')
		dl--;
	if (sl > 0 && sub[sl - 1] == '.')
		sl--;
	if (dl == 0)
		return 0;
	/* equal, or a parent: sub ends in "." + dk (DNS names compare caselessly) */
	if ((sl == dl && strncasecmp(sub, dk, dl) == 0) ||
	    (sl > dl && sub[sl - dl - 1] == '.' && strncasecmp(sub + sl - dl, dk, dl) == 0))
		return 0;
	if (why != NULL)
		snprintf(why, whylen,
			 "dkim_domain '%.*s' is neither the report submitter's domain '%.*s' "
			 "(from tlsrpt_contact) nor a parent of it: receivers ignore reports not "
			 "signed by the reporting domain (RFC 8460 §3)",
			 (int)dl, dk, (int)sl, sub);
	return -1;
}

int config_load(struct config *cfg, const char *path, char *err, size_t errlen)
{
	char reason[256];
	char *buf = NULL;
	size_t len = 0;
	int fd = -1, rc = -1;

	config_defaults(cfg);
	if (path == NULL)
		path = config_path(NULL);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(reason, sizeof(reason), "cannot open: %s", strerror(errno));
		set_err(err, errlen, path, 0, reason);
		goto out;
	}
	/* One byte more than the limit tells "too large" from "exactly 1 MiB". */
	buf = malloc(CONFIG_FILE_MAX + 1);
	if (buf == NULL) {
		set_err(err, errlen, path, 0, "out of memory");
		goto out;
	}
	while (len < CONFIG_FILE_MAX + 1) {
		ssize_t r = read(fd, buf + len, CONFIG_FILE_MAX + 1 - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(reason, sizeof(reason), "cannot read: %s", strerror(errno));
			set_err(err, errlen, path, 0, reason);
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	rc = config_parse(cfg, buf, len, path, err, errlen);
	if (rc == 0)
		rc = config_resolve_spool(cfg, path, err, errlen);
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Joins base and rel into out and removes "." and ".." segments (lexically:
 * the spool is made by stsrelay, so no link in it is followed here). */
static int join_clean(const char *base, const char *rel, char *out, size_t outlen)
{
	char tmp[2 * CONFIG_PATH_MAX + 2];
	size_t n = 0;
	char *p, *seg;

	if (snprintf(tmp, sizeof(tmp), "%s/%s", base, rel) >= (int)sizeof(tmp))
		return -1;
	if (outlen < 2)
		return -1;
	out[0] = '\0';
	p = tmp;
	while ((seg = strsep(&p, "/")) != NULL) {
		if (seg[0] == '\0' || strcmp(seg, ".") == 0)
			continue;
		if (strcmp(seg, "..") == 0) {
			while (n > 0 && out[n - 1] != '/')
				n--;
			if (n > 0)
				n--; /* the slash before the dropped segment */
			out[n] = '\0';
			continue;
		}
		if (n + 1 + strlen(seg) + 1 > outlen)
			return -1;
		out[n++] = '/';
		memcpy(out + n, seg, strlen(seg) + 1);
		n += strlen(seg);
	}
	if (n == 0) {
		out[0] = '/';
		out[1] = '\0';
	}
	return 0;
}

int config_resolve_spool(struct config *cfg, const char *path, char *err, size_t errlen)
{
	char cwd[CONFIG_PATH_MAX], real_cwd[PATH_MAX], *real_file = NULL, abs[CONFIG_PATH_MAX];
	char reason[CONFIG_PATH_MAX + 256];
	size_t clen;
	int rc = -1;

	if (cfg->spool_dir[0] == '/')
		return 0;
	if (getcwd(cwd, sizeof(cwd)) == NULL) {
		snprintf(reason, sizeof(reason),
			 "spool_dir '%s' is relative and the working "
			 "directory is unknown (%s): give an absolute path",
			 cfg->spool_dir, strerror(errno));
		goto out;
	}
	real_file = realpath(path, NULL);
	if (realpath(cwd, real_cwd) == NULL || real_file == NULL) {
		snprintf(reason, sizeof(reason),
			 "spool_dir '%s' is relative: give an absolute path", cfg->spool_dir);
		goto out;
	}
	clen = strlen(real_cwd);
	if (strcmp(real_cwd, "/") == 0 || strncmp(real_file, real_cwd, clen) != 0 ||
	    real_file[clen] != '/') {
		snprintf(reason, sizeof(reason),
			 "spool_dir '%s' is relative, which is allowed only for a configuration "
			 "file below the working directory (here %s, file %s): give an absolute "
			 "path such as /var/spool/stsrelay",
			 cfg->spool_dir, cwd, real_file);
		goto out;
	}
	if (join_clean(cwd, cfg->spool_dir, abs, sizeof(abs)) != 0) {
		snprintf(reason, sizeof(reason), "spool_dir: path longer than %d bytes",
			 CONFIG_PATH_MAX - 1);
		goto out;
	}
	copy_str(cfg->spool_dir, sizeof(cfg->spool_dir), abs);
	rc = 0;
out:
	if (rc != 0)
		set_err(err, errlen, path, config_key_line(cfg, "spool_dir"), reason);
	free(real_file);
	return rc;
}

const char *config_path(const char *explicit_path)
{
	const char *env;

	if (explicit_path != NULL && explicit_path[0] != '\0')
		return explicit_path;
	env = getenv("STSRELAY_CONF");
	if (env != NULL && env[0] != '\0')
		return env;
	return CONFIG_DEFAULT_PATH;
}

/* ---- mynetworks ----------------------------------------------------------- */

static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
	unsigned full = prefix / 8, rest = prefix % 8;

	if (memcmp(a, net, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[full] ^ net[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

bool config_mynetworks_match(const struct config *cfg, const struct sockaddr *sa)
{
	uint8_t v4[4], v6[16];
	bool has4 = false, has6 = false;

	if (cfg == NULL || sa == NULL)
		return false;
	if (sa->sa_family == AF_INET) {
		memcpy(v4, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		has4 = true;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		memcpy(v6, a6, 16);
		has6 = true;
		/* A dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d. */
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			memcpy(v4, v6 + 12, 4);
			has4 = true;
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < cfg->nmynetworks && i < CONFIG_MAX_NETWORKS; i++) {
		const struct config_network *n = &cfg->mynetworks[i];

		if (n->family == AF_INET && has4 && n->prefix <= 32 &&
		    prefix_match(v4, n->addr, n->prefix))
			return true;
		if (n->family == AF_INET6 && has6 && n->prefix <= 128 &&
		    prefix_match(v6, n->addr, n->prefix))
			return true;
	}
	return false;
}
