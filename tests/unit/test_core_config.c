/* Unit tests of relay/core/config.c: defaults, every key, every kind of error with
 * its exact "FILE:LINE: reason", durations, sizes and mynetworks matching. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay/core/config.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Renders one field in a canonical text form so that table rows can say
 * what a key should end up as. Lists are joined with ','. */
static void dump_field(const struct config *c, const char *key, char *out, size_t outlen)
{
	size_t n = 0;

	out[0] = '\0';
#define APPEND(...) do { \
		int w_ = snprintf(out + n, outlen - n, __VA_ARGS__); \
		assert_true(w_ >= 0 && (size_t)w_ < outlen - n); \
		n += (size_t)w_; \
	} while (0)
	if (strcmp(key, "listen") == 0 || strcmp(key, "dns_servers") == 0 ||
	    strcmp(key, "submission_listen") == 0 || strcmp(key, "smtps_listen") == 0) {
		const struct config_addr *a = key[0] == 'l'   ? c->listen
					      : key[0] == 'd' ? c->dns_servers
					      : key[1] == 'u' ? c->submission_listen
							      : c->smtps_listen;
		size_t cnt = key[0] == 'l'   ? c->nlisten
			     : key[0] == 'd' ? c->ndns_servers
			     : key[1] == 'u' ? c->nsubmission_listen
					     : c->nsmtps_listen;

		for (size_t i = 0; i < cnt; i++) {
			int v6 = strchr(a[i].host, ':') != NULL;

			APPEND("%s%s%s%s:%u", i ? "," : "", v6 ? "[" : "", a[i].host,
			       v6 ? "]" : "", (unsigned)a[i].port);
		}
	} else if (strcmp(key, "mynetworks") == 0) {
		for (size_t i = 0; i < c->nmynetworks; i++) {
			char txt[64];

			assert_non_null(inet_ntop(c->mynetworks[i].family, c->mynetworks[i].addr,
						  txt, sizeof(txt)));
			APPEND("%s%s/%u", i ? "," : "", txt, c->mynetworks[i].prefix);
		}
	} else if (strcmp(key, "retry_schedule") == 0) {
		for (size_t i = 0; i < c->nretry_schedule; i++)
			APPEND("%s%llu", i ? "," : "", (unsigned long long)c->retry_schedule_s[i]);
	} else if (strcmp(key, "spool_dir") == 0) {
		APPEND("%s", c->spool_dir);
	} else if (strcmp(key, "hostname") == 0) {
		APPEND("%s", c->hostname);
	} else if (strcmp(key, "max_message_size") == 0) {
		APPEND("%llu", (unsigned long long)c->max_message_size);
	} else if (strcmp(key, "ca_file") == 0) {
		APPEND("%s", c->ca_file);
	} else if (strcmp(key, "smtp_port") == 0) {
		APPEND("%u", (unsigned)c->smtp_port);
	} else if (strcmp(key, "sts_https_port") == 0) {
		APPEND("%u", (unsigned)c->sts_https_port);
	} else if (strcmp(key, "sts_fetch_timeout") == 0) {
		APPEND("%llu", (unsigned long long)c->sts_fetch_timeout_ms);
	} else if (strcmp(key, "tls_default") == 0) {
		APPEND("%d", (int)c->tls_default);
	} else if (strcmp(key, "queue_lifetime") == 0) {
		APPEND("%llu", (unsigned long long)c->queue_lifetime_s);
	} else if (strcmp(key, "max_connections_per_domain") == 0) {
		APPEND("%u", c->max_connections_per_domain);
	} else if (strcmp(key, "tlsrpt_org_name") == 0) {
		APPEND("%s", c->tlsrpt_org_name);
	} else if (strcmp(key, "tlsrpt_contact") == 0) {
		APPEND("%s", c->tlsrpt_contact);
	} else if (strcmp(key, "tlsrpt_send_at") == 0) {
		APPEND("%u", c->tlsrpt_send_at_min);
	} else if (strcmp(key, "max_sessions") == 0) {
		APPEND("%u", c->max_sessions);
	} else if (strcmp(key, "user") == 0) {
		APPEND("%s", c->user);
	} else if (strcmp(key, "tlsrpt_retention") == 0) {
		APPEND("%llu", (unsigned long long)c->tlsrpt_retention_s);
	} else if (strcmp(key, "dkim") == 0) {
		APPEND("%s|%s|%s", c->dkim_domain, c->dkim_selector, c->dkim_key_file);
	} else if (strcmp(key, "log_format") == 0) {
		APPEND("%d", (int)c->log_format);
	} else if (strcmp(key, "log_target") == 0) {
		APPEND("%d", (int)c->log_target);
	} else if (strcmp(key, "alias_root") == 0) {
		APPEND("%s", c->alias_root);
	} else if (strcmp(key, "dane") == 0) {
		APPEND("%d", (int)c->dane);
	} else if (strcmp(key, "tls_policy_file") == 0) {
		APPEND("%s", c->tls_policy_file);
	} else if (strcmp(key, "relayhost") == 0) {
		/* name|port|mx|implicit-tls */
		APPEND("%s|%u|%d|%d", c->relayhost, (unsigned)c->relayhost_port, c->relayhost_mx,
		       c->relayhost_implicit_tls);
	} else if (strcmp(key, "relayhost_auth_file") == 0) {
		APPEND("%s", c->relayhost_auth_file);
	} else if (strcmp(key, "tls") == 0) {
		APPEND("%s|%s", c->tls_cert_file, c->tls_key_file);
	} else if (strcmp(key, "auth_users_file") == 0) {
		APPEND("%s", c->auth_users_file);
	} else if (strcmp(key, "received_show_auth") == 0) {
		APPEND("%d", (int)c->received_show_auth);
	} else if (strcmp(key, "max_sessions_per_ip") == 0) {
		APPEND("%u", c->max_sessions_per_ip);
	} else {
		fail_msg("test table names unknown field %s", key);
	}
#undef APPEND
}

static const char *const all_fields[] = {
	"listen", "spool_dir", "hostname", "mynetworks", "max_message_size",
	"dns_servers", "ca_file", "smtp_port", "sts_https_port", "sts_fetch_timeout",
	"tls_default", "queue_lifetime", "retry_schedule", "max_connections_per_domain",
	"tlsrpt_org_name", "tlsrpt_contact", "tlsrpt_send_at", "max_sessions", "user",
	"tlsrpt_retention", "dkim", "log_format", "log_target", "alias_root", "dane", "tls_policy_file",
	"relayhost", "relayhost_auth_file",
	"submission_listen", "smtps_listen", "tls", "auth_users_file", "received_show_auth",
	"max_sessions_per_ip",
};

static int parse_str(struct config *c, const char *text, char *err, size_t errlen)
{
	config_defaults(c);
	return config_parse(c, text, strlen(text), "t.conf", err, errlen);
}

/* ---- defaults ------------------------------------------------------------ */

static void test_defaults(void **state)
{
	struct config c;
	char buf[512], host[256] = "";

	(void)state;
	config_defaults(&c);
	assert_int_equal(gethostname(host, sizeof(host) - 1), 0);
	assert_string_equal(c.hostname, host[0] ? host : "localhost");

	static const struct {
		const char *field, *want;
	} want[] = {
		{ "listen", "127.0.0.1:2525" },
		{ "spool_dir", "/var/spool/stsrelay" },
		{ "mynetworks", "127.0.0.0/8,::1/128" },
		{ "max_message_size", "52428800" },
		{ "dns_servers", "" },
		{ "ca_file", "" },
		{ "smtp_port", "25" },
		{ "sts_https_port", "443" },
		{ "sts_fetch_timeout", "30000" },
		{ "tls_default", "0" },
		{ "queue_lifetime", "432000" },
		{ "retry_schedule", "300,600,1200,2400,3600,7200,14400" },
		{ "max_connections_per_domain", "10" },
		{ "tlsrpt_send_at", "15" },
		{ "max_sessions", "1000" },
		{ "user", "" },
		{ "tlsrpt_retention", "1209600" },
		{ "dkim", "||" },
		{ "log_format", "0" },
		{ "dane", "1" },
		{ "tls_policy_file", "" },
		{ "submission_listen", "" },
		{ "smtps_listen", "" },
		{ "tls", "|" },
		{ "auth_users_file", "/etc/stsrelay/users" },
		{ "received_show_auth", "0" },
		{ "max_sessions_per_ip", "50" },
	};
	for (size_t i = 0; i < ARRAY_LEN(want); i++) {
		dump_field(&c, want[i].field, buf, sizeof(buf));
		if (strcmp(buf, want[i].want) != 0)
			fail_msg("default %s: got '%s', want '%s'", want[i].field, buf,
				 want[i].want);
	}
	assert_string_equal(c.tlsrpt_org_name, c.hostname);
	snprintf(buf, sizeof(buf), "postmaster@%s", c.hostname);
	assert_string_equal(c.tlsrpt_contact, buf);

	/* The listen default is a usable sockaddr. */
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&c.listen[0].sa;
	assert_int_equal(c.listen[0].salen, sizeof(struct sockaddr_in));
	assert_int_equal(sin->sin_family, AF_INET);
	assert_int_equal(ntohs(sin->sin_port), 2525);
	assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x7f000001);
}

/* An empty file and a file of comments leave every default in place. */
static void test_empty_and_comments_only(void **state)
{
	static const char *const inputs[] = {
		"", "\n", "\n\n\r\n", "# only a comment\n", "   # indented comment",
		"\t\n  \n#x = y\n", "\xEF\xBB\xBF# byte order mark\n",
	};
	struct config d, c;
	char a[512], b[512], err[512];

	(void)state;
	config_defaults(&d);
	for (size_t i = 0; i < ARRAY_LEN(inputs); i++) {
		if (parse_str(&c, inputs[i], err, sizeof(err)) != 0)
			fail_msg("input %zu: %s", i, err);
		for (size_t f = 0; f < ARRAY_LEN(all_fields); f++) {
			dump_field(&d, all_fields[f], a, sizeof(a));
			dump_field(&c, all_fields[f], b, sizeof(b));
			assert_string_equal(a, b);
		}
	}
}

/* ---- valid values -------------------------------------------------------- */

struct ok_case {
	const char *text;
	const char *field;
	const char *want;
};

static const struct ok_case ok_cases[] = {
	/* listen */
	{ "listen = 127.0.0.1:2525", "listen", "127.0.0.1:2525" },
	{ "listen = [::1]:25", "listen", "[::1]:25" },
	{ "listen = 127.0.0.1:25, [::1]:2525,0.0.0.0:587", "listen",
	  "127.0.0.1:25,[::1]:2525,0.0.0.0:587" },
	{ "listen = 127.0.0.1", "listen", "127.0.0.1:25" },
	{ "listen = [::1]", "listen", "[::1]:25" },
	{ "listen = [0:0:0:0:0:0:0:1]:65535", "listen", "[::1]:65535" },
	{ "listen = 127.0.0.1:1", "listen", "127.0.0.1:1" },
	{ "listen=127.0.0.1:2525", "listen", "127.0.0.1:2525" },
	{ "  listen\t=\t127.0.0.1:2525   ", "listen", "127.0.0.1:2525" },
	{ "listen = 127.0.0.1:2525 # comment", "listen", "127.0.0.1:2525" },
	{ "listen = 127.0.0.1:2525\t# comment", "listen", "127.0.0.1:2525" },
	/* spool_dir */
	{ "spool_dir = ./var/spool", "spool_dir", "./var/spool" },
	{ "spool_dir = /srv/my spool", "spool_dir", "/srv/my spool" },
	{ "spool_dir = /srv/a#b", "spool_dir", "/srv/a#b" },
	/* log_target (0: unset, the daemon picks), alias_root */
	{ "log_target = stderr", "log_target", "1" },
	{ "log_target = syslog", "log_target", "2" },
	{ "log_target = journal", "log_target", "3" },
	{ "alias_root = admin@example.org", "alias_root", "admin@example.org" },
	{ "alias_root =", "alias_root", "" },
	/* relayhost: name|port|mx lookup|implicit TLS (port 465) */
	{ "relayhost = [smtp.example.net]:587", "relayhost", "smtp.example.net|587|0|0" },
	{ "relayhost = [smtp.example.net]:465", "relayhost", "smtp.example.net|465|0|1" },
	{ "relayhost = [smtp.example.net]", "relayhost", "smtp.example.net|25|0|0" },
	{ "relayhost = example.net:587", "relayhost", "example.net|587|1|0" },
	{ "relayhost = example.net", "relayhost", "example.net|25|1|0" },
	{ "relayhost = [SMTP.Example.NET.]:2525", "relayhost", "smtp.example.net|2525|0|0" },
	{ "relayhost = localhost:465", "relayhost", "localhost|465|1|1" },
	{ "relayhost =", "relayhost", "|0|0|0" },
	{ "relayhost_auth_file = /etc/stsrelay/relay auth", "relayhost_auth_file",
	  "/etc/stsrelay/relay auth" },
	{ "relayhost_auth_file =", "relayhost_auth_file", "" },
	/* hostname, and the report identity that follows it */
	{ "hostname = relay.example.com", "hostname", "relay.example.com" },
	{ "hostname = relay.example.com", "tlsrpt_org_name", "relay.example.com" },
	{ "hostname = relay.example.com", "tlsrpt_contact", "postmaster@relay.example.com" },
	{ "hostname = mx-1.EXAMPLE.org", "hostname", "mx-1.EXAMPLE.org" },
	{ "hostname = localhost", "hostname", "localhost" },
	{ "hostname = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example", "hostname", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example" },
	{ "hostname = bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
	  "hostname", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc" },
	/* mynetworks */
	{ "mynetworks = 10.0.0.0/8", "mynetworks", "10.0.0.0/8" },
	{ "mynetworks = 192.0.2.7", "mynetworks", "192.0.2.7/32" },
	{ "mynetworks = 2001:db8::1", "mynetworks", "2001:db8::1/128" },
	{ "mynetworks = 2001:db8::/32, 127.0.0.0/8 ,::1/128", "mynetworks",
	  "2001:db8::/32,127.0.0.0/8,::1/128" },
	{ "mynetworks = 10.1.2.3/8", "mynetworks", "10.0.0.0/8" },
	{ "mynetworks = 255.255.255.255/7", "mynetworks", "254.0.0.0/7" },
	{ "mynetworks = 0.0.0.0/0", "mynetworks", "0.0.0.0/0" },
	{ "mynetworks = ::/0", "mynetworks", "::/0" },
	{ "mynetworks = 2001:db8:ffff::/33", "mynetworks", "2001:db8:8000::/33" },
	{ "mynetworks =", "mynetworks", "" },
	/* max_message_size */
	{ "max_message_size = 1", "max_message_size", "1" },
	{ "max_message_size = 10k", "max_message_size", "10240" },
	{ "max_message_size = 10K", "max_message_size", "10240" },
	{ "max_message_size = 50M", "max_message_size", "52428800" },
	{ "max_message_size = 2G", "max_message_size", "2147483648" },
	{ "max_message_size = 1024G", "max_message_size", "1099511627776" },
	/* dns_servers */
	{ "dns_servers = 127.0.0.1", "dns_servers", "127.0.0.1:53" },
	{ "dns_servers = 127.0.0.1:5353", "dns_servers", "127.0.0.1:5353" },
	{ "dns_servers = [::1]:5353, 127.0.0.2", "dns_servers", "[::1]:5353,127.0.0.2:53" },
	{ "dns_servers = [::1]", "dns_servers", "[::1]:53" },
	{ "dns_servers =", "dns_servers", "" },
	{ "dns_servers = 127.0.0.1:53,127.0.0.1:54", "dns_servers",
	  "127.0.0.1:53,127.0.0.1:54" },
	/* ca_file */
	{ "ca_file = /etc/ssl/test-ca.pem", "ca_file", "/etc/ssl/test-ca.pem" },
	{ "ca_file =", "ca_file", "" },
	/* ports */
	{ "smtp_port = 2526", "smtp_port", "2526" },
	{ "smtp_port = 65535", "smtp_port", "65535" },
	{ "sts_https_port = 8443", "sts_https_port", "8443" },
	/* durations */
	{ "sts_fetch_timeout = 5", "sts_fetch_timeout", "5000" },
	{ "sts_fetch_timeout = 2m", "sts_fetch_timeout", "120000" },
	{ "sts_fetch_timeout = 1s", "sts_fetch_timeout", "1000" },
	{ "queue_lifetime = 0", "queue_lifetime", "0" },
	{ "queue_lifetime = 1w", "queue_lifetime", "604800" },
	{ "queue_lifetime = 2h", "queue_lifetime", "7200" },
	{ "queue_lifetime = 365d", "queue_lifetime", "31536000" },
	{ "tlsrpt_retention = 1d", "tlsrpt_retention", "86400" },
	{ "tlsrpt_retention = 30d", "tlsrpt_retention", "2592000" },
	/* tls_default */
	{ "tls_default = opportunistic", "tls_default", "0" },
	{ "tls_default = may-plain", "tls_default", "0" }, /* an alias of opportunistic */
	{ "tls_default = encrypt", "tls_default", "1" },
	{ "tls_default = verify", "tls_default", "2" },
	/* dane, tls_policy_file */
	{ "dane = off", "dane", "0" },
	{ "dane = on", "dane", "1" },
	{ "dane = no", "dane", "0" },
	{ "tls_policy_file = /etc/stsrelay/tls_policy", "tls_policy_file",
	  "/etc/stsrelay/tls_policy" },
	{ "tls_policy_file =", "tls_policy_file", "" },
	/* retry_schedule */
	{ "retry_schedule = 1s", "retry_schedule", "1" },
	{ "retry_schedule = 1s, 2s ,1m,1h", "retry_schedule", "1,2,60,3600" },
	{ "retry_schedule = 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,30d",
	  "retry_schedule", "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,2592000" },
	/* counts */
	{ "max_connections_per_domain = 1", "max_connections_per_domain", "1" },
	{ "max_connections_per_domain = 10000", "max_connections_per_domain", "10000" },
	{ "max_sessions = 5", "max_sessions", "5" },
	{ "max_sessions = 1000000", "max_sessions", "1000000" },
	/* report identity */
	{ "tlsrpt_org_name = Example Org, Inc.", "tlsrpt_org_name", "Example Org, Inc." },
	{ "tlsrpt_contact = tls-reports@example.com", "tlsrpt_contact", "tls-reports@example.com" },
	{ "tlsrpt_contact = a.b+c=d!#$%&'*/?^_`{|}~@relay.example.com", "tlsrpt_contact",
	  "a.b+c=d!#$%&'*/?^_`{|}~@relay.example.com" },
	{ "tlsrpt_contact = x@y", "tlsrpt_contact", "x@y" },
	{ "tlsrpt_send_at = 00:00", "tlsrpt_send_at", "0" },
	{ "tlsrpt_send_at = 23:59", "tlsrpt_send_at", "1439" },
	{ "tlsrpt_send_at = 7:05", "tlsrpt_send_at", "425" },
	/* user */
	{ "user = stsrelay", "user", "stsrelay" },
	{ "user = mail_relay-2.x", "user", "mail_relay-2.x" },
	{ "user =", "user", "" },
	/* dkim */
	{ "dkim_domain = example.com\ndkim_selector = s1\ndkim_key_file = /k.pem", "dkim",
	  "example.com|s1|/k.pem" },
	{ "dkim_domain =\ndkim_selector =\ndkim_key_file =", "dkim", "||" },
	/* log_format */
	{ "log_format = json", "log_format", "1" },
	{ "log_format = text", "log_format", "0" },
	/* file shapes: CRLF, no final newline, comments and blanks around */
	{ "# head\r\n\r\nlisten = [::1]:2525\r\nmax_sessions = 7\r\n", "listen", "[::1]:2525" },
	{ "# head\r\n\r\nlisten = [::1]:2525\r\nmax_sessions = 7\r\n", "max_sessions", "7" },
	{ "max_sessions = 8", "max_sessions", "8" },
	{ "max_sessions = 9\r", "max_sessions", "9" },
	{ "\n\n   \n# c\nmax_sessions = 10 # ten\n\n", "max_sessions", "10" },
	/* remote submission: default ports 587 and 465, empty = off */
	{ "submission_listen = 0.0.0.0, [::]:2587\ntls_cert_file = /c\ntls_key_file = /k",
	  "submission_listen", "0.0.0.0:587,[::]:2587" },
	{ "smtps_listen = 192.0.2.1\ntls_cert_file = /c\ntls_key_file = /k", "smtps_listen",
	  "192.0.2.1:465" },
	{ "smtps_listen = 192.0.2.1\ntls_cert_file = /c\ntls_key_file = /k", "tls", "/c|/k" },
	{ "submission_listen =\nsmtps_listen =", "submission_listen", "" },
	{ "tls_cert_file = /etc/ssl/c.pem\ntls_key_file = /etc/ssl/k.pem", "tls",
	  "/etc/ssl/c.pem|/etc/ssl/k.pem" },
	{ "auth_users_file = /srv/users", "auth_users_file", "/srv/users" },
	{ "received_show_auth = yes", "received_show_auth", "1" },
	{ "received_show_auth = no", "received_show_auth", "0" },
	{ "max_sessions_per_ip = 300", "max_sessions_per_ip", "300" },
	/* the same port on other addresses is no overlap */
	{ "listen = 127.0.0.1:25\nsubmission_listen = 127.0.0.2:25\ntls_cert_file = /c\n"
	  "tls_key_file = /k",
	  "submission_listen", "127.0.0.2:25" },
};

static void test_ok_table(void **state)
{
	struct config c;
	char err[512], got[1024];

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(ok_cases); i++) {
		const struct ok_case *t = &ok_cases[i];

		err[0] = '\0';
		if (parse_str(&c, t->text, err, sizeof(err)) != 0)
			fail_msg("case %zu '%s': unexpected error: %s", i, t->text, err);
		dump_field(&c, t->field, got, sizeof(got));
		if (strcmp(got, t->want) != 0)
			fail_msg("case %zu '%s': %s = '%s', want '%s'", i, t->text, t->field, got,
				 t->want);
	}
}

/* ---- errors, with the exact message ----------------------------------------- */

struct err_case {
	const char *text;
	const char *want;   /* the whole error string */
};

static const struct err_case err_cases[] = {
	/* structure */
	{ "bogus = 1\n", "t.conf:1: unknown key 'bogus'" },
	{ "\n\n# c\nListen = 127.0.0.1:25\n", "t.conf:4: unknown key 'Listen'" },
	{ "max sessions = 1", "t.conf:1: unknown key 'max sessions'" },
	{ "listen 127.0.0.1:25\n", "t.conf:1: expected 'key = value', got 'listen 127.0.0.1:25'" },
	{ "# ok\nlisten\n", "t.conf:2: expected 'key = value', got 'listen'" },
	{ "= 5\n", "t.conf:1: missing key before '=' (value '5')" },
	{ "max_sessions = 1\nmax_sessions = 2\n",
	  "t.conf:2: key 'max_sessions' repeated (first set on line 1)" },
	{ "user =\n\n\nuser = x\n", "t.conf:4: key 'user' repeated (first set on line 1)" },
	{ "max_sessions = 1\r\nbad\r\n", "t.conf:2: expected 'key = value', got 'bad'" },
	{ "max_sessions = 1\rmax_sessions = 2\n", "t.conf:1: control character 0x0d in line" },
	{ "user = a\x01" "b\n", "t.conf:1: control character 0x01 in line" },
	{ "user = a\x7f" "b\n", "t.conf:1: control character 0x7f in line" },
	/* empty values for keys that need one */
	{ "listen =\n", "t.conf:1: key 'listen' needs a value" },
	{ "listen = # nothing\n", "t.conf:1: key 'listen' needs a value" },
	{ "spool_dir =", "t.conf:1: key 'spool_dir' needs a value" },
	{ "log_target = file", "t.conf:1: bad value 'file' for key 'log_target': must be stderr, "
			       "syslog or journal" },
	{ "log_target =", "t.conf:1: key 'log_target' needs a value" },
	{ "alias_root = root", "t.conf:1: bad value 'root' for key 'alias_root': must be a full "
			       "address like admin@example.org" },
	{ "alias_root = <a@b.example>", "t.conf:1: bad value '<a@b.example>' for key 'alias_root': "
					"must be a full address like admin@example.org" },
	{ "hostname =", "t.conf:1: key 'hostname' needs a value" },
	{ "relayhost = [192.0.2.1]:587",
	  "t.conf:1: bad value '[192.0.2.1]:587' for key 'relayhost': must be [host]:port, "
	  "[host], host:port or host, with a host name (not an address: TLS is verified "
	  "against the name)" },
	{ "relayhost = [2001:db8::1]:587",
	  "t.conf:1: bad value '[2001:db8::1]:587' for key 'relayhost': must be [host]:port, "
	  "[host], host:port or host, with a host name (not an address: TLS is verified "
	  "against the name)" },
	{ "relayhost = [smtp.example.net:587",
	  "t.conf:1: bad value '[smtp.example.net:587' for key 'relayhost': missing ']'" },
	{ "relayhost = [smtp.example.net]587",
	  "t.conf:1: bad value '[smtp.example.net]587' for key 'relayhost': must be "
	  "[host]:port, [host], host:port or host, with a host name (not an address: TLS is "
	  "verified against the name)" },
	{ "relayhost = smtp.example.net:0",
	  "t.conf:1: bad value 'smtp.example.net:0' for key 'relayhost': port must be a number "
	  "from 1 to 65535" },
	{ "relayhost = [smtp.example.net]:65536",
	  "t.conf:1: bad value '[smtp.example.net]:65536' for key 'relayhost': port must be a "
	  "number from 1 to 65535" },
	{ "relayhost = []:25",
	  "t.conf:1: bad value '[]:25' for key 'relayhost': must be [host]:port, [host], "
	  "host:port or host, with a host name (not an address: TLS is verified against the "
	  "name)" },
	{ "relayhost = smtp.exa mple.net",
	  "t.conf:1: bad value 'smtp.exa mple.net' for key 'relayhost': unexpected blank" },
	{ "max_message_size =", "t.conf:1: key 'max_message_size' needs a value" },
	{ "smtp_port =", "t.conf:1: key 'smtp_port' needs a value" },
	{ "sts_https_port =", "t.conf:1: key 'sts_https_port' needs a value" },
	{ "sts_fetch_timeout =", "t.conf:1: key 'sts_fetch_timeout' needs a value" },
	{ "tls_default =", "t.conf:1: key 'tls_default' needs a value" },
	{ "queue_lifetime =", "t.conf:1: key 'queue_lifetime' needs a value" },
	{ "retry_schedule =", "t.conf:1: key 'retry_schedule' needs a value" },
	{ "max_connections_per_domain =",
	  "t.conf:1: key 'max_connections_per_domain' needs a value" },
	{ "tlsrpt_org_name =", "t.conf:1: key 'tlsrpt_org_name' needs a value" },
	{ "tlsrpt_contact =", "t.conf:1: key 'tlsrpt_contact' needs a value" },
	/* the contact is the report's From:, envelope sender and submitter:
	 * a plain local@domain, nothing else (RFC 8460 §5.1, §5.3) */
	{ "tlsrpt_contact = mailto:tls@example.com",
	  "t.conf:1: bad value 'mailto:tls@example.com' for key 'tlsrpt_contact': "
	  "not an e-mail address (local@domain)" },
	{ "tlsrpt_contact = example.com",
	  "t.conf:1: bad value 'example.com' for key 'tlsrpt_contact': not an e-mail address (local@domain)" },
	{ "tlsrpt_contact = @example.com",
	  "t.conf:1: bad value '@example.com' for key 'tlsrpt_contact': not an e-mail address (local@domain)" },
	{ "tlsrpt_contact = tls@",
	  "t.conf:1: bad value 'tls@' for key 'tlsrpt_contact': not an e-mail address (local@domain)" },
	{ "tlsrpt_contact = tls@[192.0.2.1]",
	  "t.conf:1: bad value 'tls@[192.0.2.1]' for key 'tlsrpt_contact': not an e-mail address (local@domain)" },
	{ "tlsrpt_contact = \"a b\"@example.com",
	  "t.conf:1: bad value '\"a b\"@example.com' for key 'tlsrpt_contact': not an e-mail address (local@domain)" },
	{ "tlsrpt_contact = a..b@example.com",
	  "t.conf:1: bad value 'a..b@example.com' for key 'tlsrpt_contact': not an e-mail address (local@domain)" },
	{ "tlsrpt_contact = .a@example.com",
	  "t.conf:1: bad value '.a@example.com' for key 'tlsrpt_contact': not an e-mail address (local@domain)" },
	{ "tlsrpt_contact = Reports <tls@example.com>",
	  "t.conf:1: bad value 'Reports <tls@example.com>' for key 'tlsrpt_contact': not an e-mail address (local@domain)" },
	{ "tlsrpt_contact = tls@exa_mple..com",
	  "t.conf:1: bad value 'tls@exa_mple..com' for key 'tlsrpt_contact': not an e-mail address (local@domain)" },
	{ "tlsrpt_send_at =", "t.conf:1: key 'tlsrpt_send_at' needs a value" },
	{ "max_sessions =", "t.conf:1: key 'max_sessions' needs a value" },
	{ "tlsrpt_retention =", "t.conf:1: key 'tlsrpt_retention' needs a value" },
	{ "log_format =", "t.conf:1: key 'log_format' needs a value" },
	/* remote submission */
	{ "auth_users_file =", "t.conf:1: key 'auth_users_file' needs a value" },
	{ "received_show_auth = true",
	  "t.conf:1: bad value 'true' for key 'received_show_auth': must be yes or no" },
	{ "max_sessions_per_ip = 0",
	  "t.conf:1: bad value '0' for key 'max_sessions_per_ip': must be a number from 1 to "
	  "1000000" },
	{ "submission_listen = localhost:587",
	  "t.conf:1: bad value 'localhost:587' for key 'submission_listen': not a numeric IPv4 or "
	  "IPv6 address" },
	{ "# x\nsubmission_listen = 0.0.0.0",
	  "t.conf:2: submission_listen and smtps_listen need tls_cert_file and tls_key_file "
	  "(AUTH is offered only over TLS)" },
	{ "smtps_listen = 0.0.0.0\ntls_cert_file = /c",
	  "t.conf:1: submission_listen and smtps_listen need tls_cert_file and tls_key_file "
	  "(AUTH is offered only over TLS)" },
	{ "tls_cert_file = /c\n\ntls_key_file =",
	  "t.conf:3: 'tls_cert_file' and 'tls_key_file' must be set together" },
	{ "listen = 127.0.0.1:2525\ntls_cert_file = /c\ntls_key_file = /k\n"
	  "smtps_listen = 127.0.0.1:2525",
	  "t.conf:4: address 127.0.0.1:2525 is in both listen and smtps_listen" },
	{ "submission_listen = [::1]:587\ntls_cert_file = /c\ntls_key_file = /k\n"
	  "smtps_listen = [::1]:587",
	  "t.conf:4: address ::1:587 is in both submission_listen and smtps_listen" },
	/* listen / dns_servers */
	{ "listen = localhost:25",
	  "t.conf:1: bad value 'localhost:25' for key 'listen': not a numeric IPv4 or IPv6 address" },
	{ "listen = 127.0.0.1:0",
	  "t.conf:1: bad value '127.0.0.1:0' for key 'listen': port must be a number from 1 to 65535" },
	{ "listen = 127.0.0.1:65536",
	  "t.conf:1: bad value '127.0.0.1:65536' for key 'listen': port must be a number from 1 to 65535" },
	{ "listen = 127.0.0.1:",
	  "t.conf:1: bad value '127.0.0.1:' for key 'listen': port must be a number from 1 to 65535" },
	{ "listen = 127.0.0.1:-1",
	  "t.conf:1: bad value '127.0.0.1:-1' for key 'listen': port must be a number from 1 to 65535" },
	{ "listen = 127.0.0.1:25x",
	  "t.conf:1: bad value '127.0.0.1:25x' for key 'listen': port must be a number from 1 to 65535" },
	{ "listen = ::1:25",
	  "t.conf:1: bad value '::1:25' for key 'listen': IPv6 addresses must be written [ADDR] or [ADDR]:PORT" },
	{ "listen = ::1",
	  "t.conf:1: bad value '::1' for key 'listen': IPv6 addresses must be written [ADDR] or [ADDR]:PORT" },
	{ "dns_servers = 127.0.0.1, 2001:db8::53",
	  "t.conf:1: bad value '127.0.0.1, 2001:db8::53' for key 'dns_servers': IPv6 addresses must be written [ADDR] or [ADDR]:PORT" },
	{ "listen = [::1:25",
	  "t.conf:1: bad value '[::1:25' for key 'listen': missing ']'" },
	{ "listen = [::1]25",
	  "t.conf:1: bad value '[::1]25' for key 'listen': expected ':PORT' after ']'" },
	{ "listen = [127.0.0.1]:25",
	  "t.conf:1: bad value '[127.0.0.1]:25' for key 'listen': not an IPv6 address inside [...]" },
	{ "listen = 127.0.0.1:25,",
	  "t.conf:1: bad value '127.0.0.1:25,' for key 'listen': empty list element" },
	{ "listen = ,127.0.0.1:25",
	  "t.conf:1: bad value ',127.0.0.1:25' for key 'listen': empty list element" },
	{ "listen = 127.0.0.1:25,,[::1]:25",
	  "t.conf:1: bad value '127.0.0.1:25,,[::1]:25' for key 'listen': empty list element" },
	{ "listen = 127.0.0.1:25, 127.0.0.1:25",
	  "t.conf:1: bad value '127.0.0.1:25, 127.0.0.1:25' for key 'listen': address 127.0.0.1:25 listed twice" },
	{ "listen = 1.1.1.1:1,1.1.1.1:2,1.1.1.1:3,1.1.1.1:4,1.1.1.1:5,1.1.1.1:6,1.1.1.1:7,"
	  "1.1.1.1:8,1.1.1.1:9,1.1.1.1:10,1.1.1.1:11,1.1.1.1:12,1.1.1.1:13,1.1.1.1:14,"
	  "1.1.1.1:15,1.1.1.1:16,1.1.1.1:17",
	  "t.conf:1: bad value '1.1.1.1:1,1.1.1.1:2,1.1.1.1:3,1.1.1.1:4,1.1.1.1:5,1.1.1.1:6,...'"
	  " for key 'listen': more than 16 addresses" },
	{ "dns_servers = 127.0.0.1:53 127.0.0.2",
	  "t.conf:1: bad value '127.0.0.1:53 127.0.0.2' for key 'dns_servers': port must be a number from 1 to 65535" },
	{ "dns_servers = 1.2.3",
	  "t.conf:1: bad value '1.2.3' for key 'dns_servers': not a numeric IPv4 or IPv6 address" },
	{ "dns_servers = 1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4,1.1.1.5,1.1.1.6,1.1.1.7,1.1.1.8,1.1.1.9",
	  "t.conf:1: bad value '1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4,1.1.1.5,1.1.1.6,1.1.1.7,1.1....'"
	  " for key 'dns_servers': more than 8 addresses" },
	/* hostname and DKIM names */
	{ "hostname = relay example",
	  "t.conf:1: bad value 'relay example' for key 'hostname': unexpected blank" },
	{ "hostname = -relay.example",
	  "t.conf:1: bad value '-relay.example' for key 'hostname': not a valid domain name" },
	{ "hostname = relay..example",
	  "t.conf:1: bad value 'relay..example' for key 'hostname': not a valid domain name" },
	{ "hostname = relay.example.",
	  "t.conf:1: bad value 'relay.example.' for key 'hostname': not a valid domain name" },
	{ "hostname = relay-.example",
	  "t.conf:1: bad value 'relay-.example' for key 'hostname': not a valid domain name" },
	{ "hostname = r\xc3\xa9lay.example",
	  "t.conf:1: bad value 'r??lay.example' for key 'hostname': not a valid domain name" },
	{ "hostname = a234567890123456789012345678901234567890123456789012345678901234.x",
	  "t.conf:1: bad value 'a23456789012345678901234567890123456789012345678901234567890...'"
	  " for key 'hostname': not a valid domain name" },
	{ "hostname = bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccd",
	  "t.conf:1: bad value 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb...' for key 'hostname': not a valid domain name" },
	{ "dkim_domain = example.com\ndkim_selector = s.1\ndkim_key_file = /k\nuser = x\ndkim_selector = s",
	  "t.conf:5: key 'dkim_selector' repeated (first set on line 2)" },
	{ "dkim_domain = exa mple.com\ndkim_selector = s\ndkim_key_file = /k",
	  "t.conf:1: bad value 'exa mple.com' for key 'dkim_domain': unexpected blank" },
	/* mynetworks */
	{ "mynetworks = 10.0.0.0/33",
	  "t.conf:1: bad value '10.0.0.0/33' for key 'mynetworks': prefix length must be a number from 0 to 32" },
	{ "mynetworks = ::1/129",
	  "t.conf:1: bad value '::1/129' for key 'mynetworks': prefix length must be a number from 0 to 128" },
	{ "mynetworks = 10.0.0.0/",
	  "t.conf:1: bad value '10.0.0.0/' for key 'mynetworks': prefix length must be a number from 0 to 32" },
	{ "mynetworks = 10.0.0.0/-1",
	  "t.conf:1: bad value '10.0.0.0/-1' for key 'mynetworks': prefix length must be a number from 0 to 32" },
	{ "mynetworks = 10.0.0.0/8/8",
	  "t.conf:1: bad value '10.0.0.0/8/8' for key 'mynetworks': prefix length must be a number from 0 to 32" },
	{ "mynetworks = 10.0.0/8",
	  "t.conf:1: bad value '10.0.0/8' for key 'mynetworks': not a numeric IPv4 or IPv6 address" },
	{ "mynetworks = example.com",
	  "t.conf:1: bad value 'example.com' for key 'mynetworks': not a numeric IPv4 or IPv6 address" },
	{ "mynetworks = 10.0.0.0/8,",
	  "t.conf:1: bad value '10.0.0.0/8,' for key 'mynetworks': empty list element" },
	/* sizes */
	{ "max_message_size = 0",
	  "t.conf:1: bad value '0' for key 'max_message_size': must be from 1 byte to 1024G" },
	{ "max_message_size = 1025G",
	  "t.conf:1: bad value '1025G' for key 'max_message_size': must be from 1 byte to 1024G" },
	{ "max_message_size = 18446744073709551616",
	  "t.conf:1: bad value '18446744073709551616' for key 'max_message_size': not a size (bytes, or a number with k, M or G)" },
	{ "max_message_size = 17179869184G",
	  "t.conf:1: bad value '17179869184G' for key 'max_message_size': not a size (bytes, or a number with k, M or G)" },
	{ "max_message_size = -1",
	  "t.conf:1: bad value '-1' for key 'max_message_size': not a size (bytes, or a number with k, M or G)" },
	{ "max_message_size = 10T",
	  "t.conf:1: bad value '10T' for key 'max_message_size': not a size (bytes, or a number with k, M or G)" },
	{ "max_message_size = 10 M",
	  "t.conf:1: bad value '10 M' for key 'max_message_size': unexpected blank" },
	{ "max_message_size = 10MB",
	  "t.conf:1: bad value '10MB' for key 'max_message_size': not a size (bytes, or a number with k, M or G)" },
	{ "max_message_size = M",
	  "t.conf:1: bad value 'M' for key 'max_message_size': not a size (bytes, or a number with k, M or G)" },
	/* ports */
	{ "smtp_port = 0", "t.conf:1: bad value '0' for key 'smtp_port': port must be a number from 1 to 65535" },
	{ "smtp_port = 65536", "t.conf:1: bad value '65536' for key 'smtp_port': port must be a number from 1 to 65535" },
	{ "sts_https_port = +443", "t.conf:1: bad value '+443' for key 'sts_https_port': port must be a number from 1 to 65535" },
	{ "sts_https_port = 0x1bb", "t.conf:1: bad value '0x1bb' for key 'sts_https_port': port must be a number from 1 to 65535" },
	/* durations */
	{ "sts_fetch_timeout = 0",
	  "t.conf:1: bad value '0' for key 'sts_fetch_timeout': must be from 1s to 86400s" },
	{ "sts_fetch_timeout = 2d",
	  "t.conf:1: bad value '2d' for key 'sts_fetch_timeout': must be from 1s to 86400s" },
	{ "sts_fetch_timeout = 30 s",
	  "t.conf:1: bad value '30 s' for key 'sts_fetch_timeout': unexpected blank" },
	{ "sts_fetch_timeout = 30S",
	  "t.conf:1: bad value '30S' for key 'sts_fetch_timeout': not a duration (e.g. 30s, 5m, 2h, 5d, 1w)" },
	{ "queue_lifetime = -5d",
	  "t.conf:1: bad value '-5d' for key 'queue_lifetime': not a duration (e.g. 30s, 5m, 2h, 5d, 1w)" },
	{ "queue_lifetime = 5dd",
	  "t.conf:1: bad value '5dd' for key 'queue_lifetime': not a duration (e.g. 30s, 5m, 2h, 5d, 1w)" },
	{ "queue_lifetime = 1.5d",
	  "t.conf:1: bad value '1.5d' for key 'queue_lifetime': not a duration (e.g. 30s, 5m, 2h, 5d, 1w)" },
	{ "queue_lifetime = 366d",
	  "t.conf:1: bad value '366d' for key 'queue_lifetime': must be from 0s to 31536000s" },
	{ "queue_lifetime = 30500568904943664w",
	  "t.conf:1: bad value '30500568904943664w' for key 'queue_lifetime': not a duration (e.g. 30s, 5m, 2h, 5d, 1w)" },
	{ "tlsrpt_retention = 1h",
	  "t.conf:1: bad value '1h' for key 'tlsrpt_retention': must be from 86400s to 315360000s" },
	/* retry_schedule */
	{ "retry_schedule = 5m,0,10m",
	  "t.conf:1: bad value '5m,0,10m' for key 'retry_schedule': must be from 1s to 2592000s" },
	{ "retry_schedule = 5m,,10m",
	  "t.conf:1: bad value '5m,,10m' for key 'retry_schedule': empty list element" },
	{ "retry_schedule = 5m,x",
	  "t.conf:1: bad value '5m,x' for key 'retry_schedule': not a duration (e.g. 30s, 5m, 2h, 5d, 1w)" },
	{ "retry_schedule = 5m 10m",
	  "t.conf:1: bad value '5m 10m' for key 'retry_schedule': not a duration (e.g. 30s, 5m, 2h, 5d, 1w)" },
	{ "retry_schedule = 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
	  "t.conf:1: bad value '1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,...'"
	  " for key 'retry_schedule': more than 32 steps" },
	/* enums */
	{ "dane = maybe", "t.conf:1: bad value 'maybe' for key 'dane': must be on or off" },
	{ "tls_default = strict",
	  "t.conf:1: bad value 'strict' for key 'tls_default': must be opportunistic (alias may-plain), encrypt or verify" },
	{ "tls_default = Verify",
	  "t.conf:1: bad value 'Verify' for key 'tls_default': must be opportunistic (alias may-plain), encrypt or verify" },
	{ "log_format = xml", "t.conf:1: bad value 'xml' for key 'log_format': must be text or json" },
	/* counts */
	{ "max_sessions = 0", "t.conf:1: bad value '0' for key 'max_sessions': must be a number from 1 to 1000000" },
	{ "max_sessions = 1000001",
	  "t.conf:1: bad value '1000001' for key 'max_sessions': must be a number from 1 to 1000000" },
	{ "max_sessions = 99999999999999999999999",
	  "t.conf:1: bad value '99999999999999999999999' for key 'max_sessions': must be a number from 1 to 1000000" },
	{ "max_connections_per_domain = 0",
	  "t.conf:1: bad value '0' for key 'max_connections_per_domain': must be a number from 1 to 10000" },
	{ "max_connections_per_domain = ten",
	  "t.conf:1: bad value 'ten' for key 'max_connections_per_domain': must be a number from 1 to 10000" },
	/* tlsrpt_send_at */
	{ "tlsrpt_send_at = 24:00",
	  "t.conf:1: bad value '24:00' for key 'tlsrpt_send_at': must be a UTC time HH:MM from 00:00 to 23:59" },
	{ "tlsrpt_send_at = 12:60",
	  "t.conf:1: bad value '12:60' for key 'tlsrpt_send_at': must be a UTC time HH:MM from 00:00 to 23:59" },
	{ "tlsrpt_send_at = 12:5",
	  "t.conf:1: bad value '12:5' for key 'tlsrpt_send_at': must be a UTC time HH:MM from 00:00 to 23:59" },
	{ "tlsrpt_send_at = 1215",
	  "t.conf:1: bad value '1215' for key 'tlsrpt_send_at': must be a UTC time HH:MM from 00:00 to 23:59" },
	{ "tlsrpt_send_at = 012:15",
	  "t.conf:1: bad value '012:15' for key 'tlsrpt_send_at': must be a UTC time HH:MM from 00:00 to 23:59" },
	{ "tlsrpt_send_at = 12:15:00",
	  "t.conf:1: bad value '12:15:00' for key 'tlsrpt_send_at': must be a UTC time HH:MM from 00:00 to 23:59" },
	/* user */
	{ "user = -root", "t.conf:1: bad value '-root' for key 'user': not a valid user name" },
	{ "user = a/b", "t.conf:1: bad value 'a/b' for key 'user': not a valid user name" },
	{ "user = a b", "t.conf:1: bad value 'a b' for key 'user': unexpected blank" },
	/* DKIM: all three or none */
	{ "dkim_domain = example.com\n",
	  "t.conf:1: 'dkim_domain', 'dkim_selector' and 'dkim_key_file' must be set all together or not at all" },
	{ "dkim_domain = example.com\n# x\ndkim_selector = s\n",
	  "t.conf:3: 'dkim_domain', 'dkim_selector' and 'dkim_key_file' must be set all together or not at all" },
	{ "dkim_key_file = /k\ndkim_domain = example.com\ndkim_selector =\n",
	  "t.conf:3: 'dkim_domain', 'dkim_selector' and 'dkim_key_file' must be set all together or not at all" },
	/* the line number counts every kind of line, CRLF included */
	{ "# 1\r\n\r\n   \r\nmax_sessions = 5\r\n\r\nmax_sessions = x\r\n",
	  "t.conf:6: key 'max_sessions' repeated (first set on line 4)" },
	{ "# 1\r\n\r\n   \r\nmax_sessions = 5\r\n\r\nlog_format = x\r\n",
	  "t.conf:6: bad value 'x' for key 'log_format': must be text or json" },
};

static void test_err_table(void **state)
{
	struct config c;
	char err[1024];

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(err_cases); i++) {
		const struct err_case *t = &err_cases[i];

		memset(err, 0, sizeof(err));
		if (parse_str(&c, t->text, err, sizeof(err)) != -1)
			fail_msg("case %zu '%s': accepted, want error '%s'", i, t->text, t->want);
		if (strcmp(err, t->want) != 0)
			fail_msg("case %zu:\n got: %s\nwant: %s", i, err, t->want);
	}
}

/* A failed parse must leave the previous configuration untouched (SIGHUP
 * reload keeps running on the old one). */
static void test_error_keeps_config(void **state)
{
	static const char text[] = "max_sessions = 7\nlisten = [::1]:25\nlog_format = xml\n";
	struct config c;
	char err[256];

	(void)state;
	config_defaults(&c);
	assert_int_equal(config_parse(&c, text, strlen(text), "r.conf", err, sizeof(err)), -1);
	assert_string_equal(err, "r.conf:3: bad value 'xml' for key 'log_format': must be text or json");
	assert_int_equal(c.max_sessions, 1000);
	assert_string_equal(c.listen[0].host, "127.0.0.1");
	/* NULL or zero-sized error buffers are allowed. */
	assert_int_equal(config_parse(&c, text, strlen(text), "r.conf", NULL, 0), -1);
	assert_int_equal(config_parse(&c, text, strlen(text), NULL, err, 0), -1);
	assert_int_equal(config_parse(&c, text, strlen(text), NULL, err, 5), -1);
	assert_string_equal(err, "(con");
}

/* `stsrelay check` names FILE:LINE of a key it finds fault with. */
static void test_key_lines(void **state)
{
	static const char text[] = "# comment\n\nmax_sessions = 7\r\n  user = mail\n";
	static const char other[] = "hostname = a.example\n";
	struct config c;
	char err[256];

	(void)state;
	config_defaults(&c);
	assert_int_equal(config_key_line(&c, "max_sessions"), 0);
	assert_int_equal(config_parse(&c, text, strlen(text), "l.conf", err, sizeof(err)), 0);
	assert_int_equal(config_key_line(&c, "max_sessions"), 3);
	assert_int_equal(config_key_line(&c, "user"), 4);
	assert_int_equal(config_key_line(&c, "listen"), 0);        /* the default */
	assert_int_equal(config_key_line(&c, "no_such_key"), 0);
	/* the lines are those of the last file parsed */
	assert_int_equal(config_parse(&c, other, strlen(other), "o.conf", err, sizeof(err)), 0);
	assert_int_equal(config_key_line(&c, "hostname"), 1);
	assert_int_equal(config_key_line(&c, "max_sessions"), 0);
	assert_int_equal(c.max_sessions, 7);
}

static void test_nul_and_line_length(void **state)
{
	static const char nul[] = "max_sessions = 1\nuser = a\0b\n";
	struct config c;
	char err[256];
	char *buf;
	size_t n;

	(void)state;
	config_defaults(&c);
	assert_int_equal(config_parse(&c, nul, sizeof(nul) - 1, "n.conf", err, sizeof(err)), -1);
	assert_string_equal(err, "n.conf:2: NUL byte in line");

	/* A line of exactly 4096 bytes is fine (CR and LF not counted), 4097 is not. */
	buf = malloc(8192);
	assert_non_null(buf);
	n = (size_t)snprintf(buf, 8192, "# x\nspool_dir = /");
	memset(buf + n, 'a', 4096 - (n - 4));
	n = 4 + 4096;
	memcpy(buf + n, "\r\n", 2);
	assert_int_equal(config_parse(&c, buf, n + 2, "l.conf", err, sizeof(err)), -1);
	assert_string_equal(err, "l.conf:2: bad value '/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'"
			    " for key 'spool_dir': path longer than 1023 bytes");
	buf[n] = 'a';
	assert_int_equal(config_parse(&c, buf, n + 2, "l.conf", err, sizeof(err)), -1);
	assert_string_equal(err, "l.conf:2: line longer than 4096 bytes");
	/* A 4096-byte comment line is accepted. */
	memset(buf, '#', 4096);
	memcpy(buf + 4096, "\nmax_sessions = 3\n", 18);
	assert_int_equal(config_parse(&c, buf, 4096 + 18, "l.conf", err, sizeof(err)), 0);
	assert_int_equal(c.max_sessions, 3);
	free(buf);
}

static void test_file_size_limit(void **state)
{
	const size_t limit = 1024 * 1024;
	struct config c;
	char err[256];
	char *buf = malloc(limit + 1);

	(void)state;
	assert_non_null(buf);
	/* 1 MiB of 64-byte comment lines: accepted. */
	for (size_t i = 0; i < limit; i += 64) {
		memset(buf + i, '#', 63);
		buf[i + 63] = '\n';
	}
	config_defaults(&c);
	assert_int_equal(config_parse(&c, buf, limit, "big.conf", err, sizeof(err)), 0);
	buf[limit] = '\n';
	assert_int_equal(config_parse(&c, buf, limit + 1, "big.conf", err, sizeof(err)), -1);
	assert_string_equal(err, "big.conf: file larger than 1048576 bytes");
	free(buf);
}

/* ---- report identity follows hostname ----------------------------------------- */

static void test_report_identity(void **state)
{
	struct config c;
	char err[256];

	(void)state;
	assert_int_equal(parse_str(&c, "tlsrpt_org_name = Org\nhostname = h.example\n", err,
				   sizeof(err)), 0);
	assert_string_equal(c.tlsrpt_org_name, "Org");
	assert_string_equal(c.tlsrpt_contact, "postmaster@h.example");

	assert_int_equal(parse_str(&c, "hostname = h.example\ntlsrpt_contact = x@y\n", err,
				   sizeof(err)), 0);
	assert_string_equal(c.tlsrpt_org_name, "h.example");
	assert_string_equal(c.tlsrpt_contact, "x@y");

	/* A zeroed struct (no config_defaults) still gets identities. */
	memset(&c, 0, sizeof(c));
	assert_int_equal(config_parse(&c, "hostname = z.example", 20, "z", err, sizeof(err)), 0);
	assert_string_equal(c.tlsrpt_org_name, "z.example");
	assert_string_equal(c.tlsrpt_contact, "postmaster@z.example");
}

/* ---- durations and sizes -------------------------------------------------------- */

struct num_case {
	const char *s;
	int ok;
	uint64_t want;
};

static const struct num_case duration_cases[] = {
	{ "0", 1, 0 }, { "30", 1, 30 }, { "30s", 1, 30 }, { "5m", 1, 300 },
	{ "2h", 1, 7200 }, { "5d", 1, 432000 }, { "1w", 1, 604800 },
	{ "007s", 1, 7 },
	{ "18446744073709551615", 1, UINT64_MAX },
	{ "18446744073709551616", 0, 0 },
	{ "307445734561825860m", 1, UINT64_C(307445734561825860) * 60 },
	{ "307445734561825861m", 0, 0 },
	{ "30500568904943w", 1, UINT64_C(30500568904943) * 604800 },
	{ "30500568904944w", 0, 0 },
	{ "", 0, 0 }, { "s", 0, 0 }, { "-1", 0, 0 }, { "+1", 0, 0 }, { " 1", 0, 0 },
	{ "1 ", 0, 0 }, { "1x", 0, 0 }, { "1ms", 0, 0 }, { "1S", 0, 0 }, { "1M", 0, 0 },
	{ "1h30m", 0, 0 }, { "0x10", 0, 0 }, { "1.0", 0, 0 },
};

static const struct num_case size_cases[] = {
	{ "0", 1, 0 }, { "52428800", 1, 52428800 }, { "10k", 1, 10240 }, { "10K", 1, 10240 },
	{ "50M", 1, 52428800 }, { "50m", 1, 52428800 }, { "1G", 1, 1073741824 },
	{ "1g", 1, 1073741824 },
	{ "17179869183G", 1, UINT64_C(17179869183) << 30 },
	{ "17179869184G", 0, 0 },
	{ "18446744073709551615", 1, UINT64_MAX },
	{ "18446744073709551616", 0, 0 },
	{ "", 0, 0 }, { "k", 0, 0 }, { "-1", 0, 0 }, { "1 k", 0, 0 }, { "1kb", 0, 0 },
	{ "1T", 0, 0 }, { "1.5M", 0, 0 }, { " 1", 0, 0 },
};

static void check_num_table(const struct num_case *t, size_t n,
			    int (*fn)(const char *, uint64_t *), const char *what)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t v = 12345;
		int r = fn(t[i].s, &v);

		if (t[i].ok && (r != 0 || v != t[i].want))
			fail_msg("%s '%s': r=%d v=%llu, want %llu", what, t[i].s, r,
				 (unsigned long long)v, (unsigned long long)t[i].want);
		if (!t[i].ok && (r != -1 || v != 12345))
			fail_msg("%s '%s': accepted (v=%llu) or output touched", what, t[i].s,
				 (unsigned long long)v);
	}
	assert_int_equal(fn(NULL, &(uint64_t){ 0 }), -1);
	assert_int_equal(fn("1", NULL), -1);
}

/* RFC 8460 §3: dkim_domain is the submitter's domain or a parent of it. */
static void test_dkim_domain_check(void **state)
{
	static const struct {
		const char *contact, *dkim;
		int ok;
	} cases[] = {
		{ "tls@relay.example.com", "", 0 },
		{ "tls@relay.example.com", "relay.example.com", 0 },
		{ "tls@relay.example.com", "RELAY.Example.COM.", 0 },
		{ "tls@relay.example.com", "example.com", 0 },
		{ "tls@relay.example.com", "com", 0 },
		{ "tls@relay.example.com", "other.example.com", -1 },
		{ "tls@relay.example.com", "ay.example.com", -1 },
		{ "tls@relay.example.com", "x.relay.example.com", -1 },
		{ "tls@example.com", "example.org", -1 },
	};
	struct config c;
	char why[512];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		config_defaults(&c);
		snprintf(c.tlsrpt_contact, sizeof(c.tlsrpt_contact), "%s", cases[i].contact);
		snprintf(c.dkim_domain, sizeof(c.dkim_domain), "%s", cases[i].dkim);
		if (config_check_dkim_domain(&c, why, sizeof(why)) != cases[i].ok)
			fail_msg("case %zu (%s, %s): want %d", i, cases[i].contact, cases[i].dkim,
				 cases[i].ok);
		if (cases[i].ok != 0 && strstr(why, "RFC 8460") == NULL)
			fail_msg("case %zu: reason '%s'", i, why);
	}
	config_defaults(&c);
	snprintf(c.tlsrpt_contact, sizeof(c.tlsrpt_contact), "tls@relay.example.com");
	snprintf(c.dkim_domain, sizeof(c.dkim_domain), "example.org");
	assert_int_equal(config_check_dkim_domain(&c, why, sizeof(why)), -1);
	assert_string_equal(why, "dkim_domain 'example.org' is neither the report submitter's domain "
			    "'relay.example.com' (from tlsrpt_contact) nor a parent of it: receivers "
			    "ignore reports not signed by the reporting domain (RFC 8460 §3)");
}

static void test_durations(void **state)
{
	(void)state;
	check_num_table(duration_cases, ARRAY_LEN(duration_cases), config_parse_duration,
			"duration");
}

static void test_sizes(void **state)
{
	(void)state;
	check_num_table(size_cases, ARRAY_LEN(size_cases), config_parse_size, "size");
}

/* ---- sockaddrs ------------------------------------------------------------------ */

static void test_sockaddrs(void **state)
{
	static const char text[] = "listen = [::1]:2526, 127.0.0.2:2527\n"
				   "dns_servers = [::1]:5353,127.0.0.1\n";
	struct config c;
	char err[256];
	const struct sockaddr_in6 *s6;
	const struct sockaddr_in *s4;

	(void)state;
	assert_int_equal(parse_str(&c, text, err, sizeof(err)), 0);
	assert_int_equal(c.nlisten, 2);
	s6 = (const struct sockaddr_in6 *)&c.listen[0].sa;
	assert_int_equal(c.listen[0].salen, sizeof(*s6));
	assert_int_equal(s6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(s6->sin6_port), 2526);
	assert_true(IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr));
	s4 = (const struct sockaddr_in *)&c.listen[1].sa;
	assert_int_equal(c.listen[1].salen, sizeof(*s4));
	assert_int_equal(s4->sin_family, AF_INET);
	assert_int_equal(ntohs(s4->sin_port), 2527);
	assert_int_equal(ntohl(s4->sin_addr.s_addr), 0x7f000002);

	assert_int_equal(c.ndns_servers, 2);
	s6 = (const struct sockaddr_in6 *)&c.dns_servers[0].sa;
	assert_int_equal(s6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(s6->sin6_port), 5353);
	assert_string_equal(c.dns_servers[0].host, "::1");
	s4 = (const struct sockaddr_in *)&c.dns_servers[1].sa;
	assert_int_equal(ntohs(s4->sin_port), 53);
	assert_int_equal(c.dns_servers[1].port, 53);
	assert_string_equal(c.dns_servers[1].host, "127.0.0.1");
}

/* ---- mynetworks matching ---------------------------------------------------------- */

struct match_case {
	const char *networks;
	const char *addr;
	bool want;
};

static const struct match_case match_cases[] = {
	/* defaults */
	{ NULL, "127.0.0.1", true },
	{ NULL, "127.255.255.254", true },
	{ NULL, "128.0.0.1", false },
	{ NULL, "126.255.255.255", false },
	{ NULL, "::1", true },
	{ NULL, "::2", false },
	{ NULL, "::ffff:127.0.0.1", true },     /* mapped -> IPv4 entry */
	{ NULL, "::ffff:10.0.0.1", false },
	{ NULL, "::127.0.0.1", false },         /* compatible, not mapped */
	{ NULL, "64:ff9b::7f00:1", false },     /* NAT64 is not mapped */
	/* /0 matches everything of its family only */
	{ "0.0.0.0/0", "203.0.113.9", true },
	{ "0.0.0.0/0", "::ffff:203.0.113.9", true },
	{ "0.0.0.0/0", "2001:db8::1", false },
	{ "::/0", "2001:db8::1", true },
	{ "::/0", "::ffff:1.2.3.4", true },     /* also an IPv6 address */
	{ "::/0", "1.2.3.4", false },
	/* /32 and bare addresses */
	{ "192.0.2.7/32", "192.0.2.7", true },
	{ "192.0.2.7/32", "192.0.2.6", false },
	{ "192.0.2.7", "192.0.2.7", true },
	{ "192.0.2.7", "192.0.2.8", false },
	{ "192.0.2.7", "::ffff:192.0.2.7", true },
	/* /128 */
	{ "2001:db8::5/128", "2001:db8::5", true },
	{ "2001:db8::5/128", "2001:db8::4", false },
	{ "2001:db8::5", "2001:db8::5", true },
	{ "2001:db8::5", "2001:db8::5:0", false },
	/* odd prefixes: /7 covers 254.0.0.0-255.255.255.255 */
	{ "255.1.2.3/7", "254.0.0.0", true },
	{ "255.1.2.3/7", "255.255.255.255", true },
	{ "255.1.2.3/7", "253.255.255.255", false },
	{ "10.0.0.0/9", "10.127.255.255", true },
	{ "10.0.0.0/9", "10.128.0.0", false },
	{ "192.168.1.128/25", "192.168.1.200", true },
	{ "192.168.1.128/25", "192.168.1.127", false },
	{ "192.168.1.0/31", "192.168.1.1", true },
	{ "192.168.1.0/31", "192.168.1.2", false },
	{ "2001:db8::/33", "2001:db8:7fff:ffff::1", true },
	{ "2001:db8::/33", "2001:db8:8000::1", false },
	{ "fc00::/7", "fdff:ffff::1", true },
	{ "fc00::/7", "fc00::", true },
	{ "fc00::/7", "fe00::1", false },
	{ "fc00::/7", "fbff::1", false },
	{ "fe00::/7", "ffff::1", true },
	{ "fe00::/7", "fdff::1", false },
	{ "2001:db8::/127", "2001:db8::1", true },
	{ "2001:db8::/127", "2001:db8::2", false },
	/* an IPv6 entry covering mapped space matches mapped clients */
	{ "::ffff:0:0/96", "::ffff:8.8.8.8", true },
	{ "::ffff:0:0/96", "8.8.8.8", false },
	/* several entries, empty list */
	{ "10.0.0.0/8, 2001:db8::/32, 192.0.2.1", "192.0.2.1", true },
	{ "10.0.0.0/8, 2001:db8::/32, 192.0.2.1", "2001:db8:1::1", true },
	{ "10.0.0.0/8, 2001:db8::/32, 192.0.2.1", "192.0.2.2", false },
	{ "", "127.0.0.1", false },
	{ "", "::1", false },
};

static void test_mynetworks_match(void **state)
{
	struct config c;
	char text[512], err[256];

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(match_cases); i++) {
		const struct match_case *t = &match_cases[i];
		struct sockaddr_storage ss;
		bool got;

		config_defaults(&c);
		if (t->networks != NULL) {
			snprintf(text, sizeof(text), "mynetworks = %s\n", t->networks);
			if (config_parse(&c, text, strlen(text), "m.conf", err, sizeof(err)) != 0)
				fail_msg("case %zu: %s", i, err);
		}
		memset(&ss, 0, sizeof(ss));
		if (strchr(t->addr, ':') != NULL) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

			s6->sin6_family = AF_INET6;
			assert_int_equal(inet_pton(AF_INET6, t->addr, &s6->sin6_addr), 1);
		} else {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

			s4->sin_family = AF_INET;
			assert_int_equal(inet_pton(AF_INET, t->addr, &s4->sin_addr), 1);
		}
		got = config_mynetworks_match(&c, (struct sockaddr *)&ss);
		if (got != t->want)
			fail_msg("case %zu: %s in [%s]: got %d want %d", i, t->addr,
				 t->networks ? t->networks : "default", got, t->want);
	}
	/* Other families and NULL never match. */
	{
		struct sockaddr_storage ss;

		memset(&ss, 0, sizeof(ss));
		ss.ss_family = AF_UNIX;
		config_defaults(&c);
		assert_false(config_mynetworks_match(&c, (struct sockaddr *)&ss));
		assert_false(config_mynetworks_match(&c, NULL));
	}
}

/* ---- files ---------------------------------------------------------------------------- */

static void test_example_conf(void **state)
{
	struct config d, c;
	char err[512], a[1024], b[1024];

	(void)state;
	/* as scripts/run uses it: from the top of the checkout */
	assert_int_equal(chdir(TEST_SRCDIR), 0);
	if (config_load(&c, "conf/stsrelay.conf", err, sizeof(err)) != 0)
		fail_msg("conf/stsrelay.conf: %s", err);
	assert_non_null(getcwd(a, sizeof(a)));
	snprintf(b, sizeof(b), "%s/var/spool", a);
	assert_string_equal(c.spool_dir, b);
	dump_field(&c, "listen", a, sizeof(a));
	assert_string_equal(a, "127.0.0.1:2525");
	/* Everything else is at its default. */
	config_defaults(&d);
	for (size_t f = 0; f < ARRAY_LEN(all_fields); f++) {
		if (strcmp(all_fields[f], "spool_dir") == 0)
			continue;
		dump_field(&d, all_fields[f], a, sizeof(a));
		dump_field(&c, all_fields[f], b, sizeof(b));
		if (strcmp(a, b) != 0)
			fail_msg("%s: example has '%s', default '%s'", all_fields[f], b, a);
	}
}

/* The example must mention every key, so an operator sees them all. */
static void test_example_conf_lists_every_key(void **state)
{
	static const char *const names[] = {
		"listen", "spool_dir", "hostname", "mynetworks", "max_message_size",
		"dns_servers", "ca_file", "smtp_port", "sts_https_port", "sts_fetch_timeout",
		"tls_default", "queue_lifetime", "retry_schedule", "max_connections_per_domain",
		"tlsrpt_org_name", "tlsrpt_contact", "tlsrpt_send_at", "max_sessions", "user",
		"tlsrpt_retention", "dkim_domain", "dkim_selector", "dkim_key_file", "log_format",
		"log_target", "alias_root", "relayhost", "relayhost_auth_file", "dane",
		"tls_policy_file",
		"log_target", "alias_root", "submission_listen", "smtps_listen", "tls_cert_file",
		"tls_key_file", "auth_users_file", "received_show_auth", "max_sessions_per_ip",
	};
	FILE *f = fopen(TEST_SRCDIR "/conf/stsrelay.conf", "r");
	char line[512];
	bool found[ARRAY_LEN(names)] = { false };

	(void)state;
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		const char *p = line;

		while (*p == '#' || *p == ' ')
			p++;
		for (size_t i = 0; i < ARRAY_LEN(names); i++) {
			size_t n = strlen(names[i]);

			if (strncmp(p, names[i], n) == 0 && (p[n] == ' ' || p[n] == '='))
				found[i] = true;
		}
	}
	fclose(f);
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		if (!found[i])
			fail_msg("conf/stsrelay.conf does not show key %s", names[i]);
}

/* spool_dir: relative only for a file below the working directory (not /),
 * and then made absolute; see config_resolve_spool. */
static void test_relative_spool(void **state)
{
	char top[] = "/tmp/stsrelay-spool-rule-XXXXXX", path[512], want[600], err[1024];
	char saved[1024];
	struct config c;
	FILE *f;

	(void)state;
	assert_non_null(getcwd(saved, sizeof(saved)));
	assert_non_null(mkdtemp(top));
	snprintf(path, sizeof(path), "%s/conf", top);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/conf/s.conf", top);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("# x\nspool_dir = ./var/../var/./spool\n", f);
	assert_int_equal(fclose(f), 0);

	assert_int_equal(chdir(top), 0);
	assert_int_equal(config_load(&c, "conf/s.conf", err, sizeof(err)), 0);
	snprintf(want, sizeof(want), "%s/var/spool", top);
	assert_string_equal(c.spool_dir, want);

	/* the file outside the working directory: refused, naming the line */
	snprintf(want, sizeof(want), "%s/conf/sub", top);
	assert_int_equal(mkdir(want, 0755), 0);
	assert_int_equal(chdir(want), 0);
	assert_int_equal(config_load(&c, path, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:2: spool_dir './var/../var/./spool' is relative, which is "
		 "allowed only for a configuration file below the working directory", path);
	assert_int_equal(strncmp(err, want, strlen(want)), 0);

	/* systemd's working directory is /: every file is below it, still refused */
	assert_int_equal(chdir("/"), 0);
	assert_int_equal(config_load(&c, path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "give an absolute path such as /var/spool/stsrelay"));

	/* an absolute spool_dir is taken as it is, from anywhere */
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("spool_dir = /srv/spool/../x\n", f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(config_load(&c, path, err, sizeof(err)), 0);
	assert_string_equal(c.spool_dir, "/srv/spool/../x");

	assert_int_equal(chdir(saved), 0);
	unlink(path);
	snprintf(path, sizeof(path), "%s/conf/sub", top);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/conf", top);
	rmdir(path);
	rmdir(top);
}

static void test_load_errors(void **state)
{
	struct config c;
	char err[512], path[] = "/tmp/stsrelay-config-test-XXXXXX";
	static const char body[] = "max_sessions = 42\nhostname = l.example\n";
	int fd;

	(void)state;
	assert_int_equal(config_load(&c, "/nonexistent/stsrelay.conf", err, sizeof(err)), -1);
	assert_string_equal(err, "/nonexistent/stsrelay.conf: cannot open: No such file or directory");

	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, body, sizeof(body) - 1), (ssize_t)(sizeof(body) - 1));
	assert_int_equal(close(fd), 0);
	assert_int_equal(config_load(&c, path, err, sizeof(err)), 0);
	assert_int_equal(c.max_sessions, 42);
	assert_string_equal(c.tlsrpt_contact, "postmaster@l.example");

	/* A file over 1 MiB is refused before parsing. */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	{
		char block[4096];

		memset(block, '#', sizeof(block));
		block[sizeof(block) - 1] = '\n';
		for (int i = 0; i < 257; i++)
			assert_int_equal(write(fd, block, sizeof(block)), (ssize_t)sizeof(block));
	}
	assert_int_equal(close(fd), 0);
	assert_int_equal(config_load(&c, path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ": file larger than 1048576 bytes"));
	assert_int_equal(strncmp(err, path, strlen(path)), 0);

	/* A bad line is reported with the file's path. */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "# c\nnope = 1\n", 13), 13);
	assert_int_equal(close(fd), 0);
	assert_int_equal(config_load(&c, path, err, sizeof(err)), -1);
	{
		char want[600];

		snprintf(want, sizeof(want), "%s:2: unknown key 'nope'", path);
		assert_string_equal(err, want);
	}
	unlink(path);

	/* A directory cannot be read as a file. */
	assert_int_equal(config_load(&c, "/", err, sizeof(err)), -1);
	assert_string_equal(err, "/: cannot read: Is a directory");
}

static void test_config_path(void **state)
{
	(void)state;
	assert_int_equal(unsetenv("STSRELAY_CONF"), 0);
	assert_string_equal(config_path(NULL), CONFIG_DEFAULT_PATH);
	assert_string_equal(config_path(""), CONFIG_DEFAULT_PATH);
	assert_string_equal(config_path("/x.conf"), "/x.conf");
	assert_int_equal(setenv("STSRELAY_CONF", "/env.conf", 1), 0);
	assert_string_equal(config_path(NULL), "/env.conf");
	assert_string_equal(config_path("/x.conf"), "/x.conf");
	assert_int_equal(setenv("STSRELAY_CONF", "", 1), 0);
	assert_string_equal(config_path(NULL), CONFIG_DEFAULT_PATH);
	assert_int_equal(unsetenv("STSRELAY_CONF"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_empty_and_comments_only),
		cmocka_unit_test(test_ok_table),
		cmocka_unit_test(test_err_table),
		cmocka_unit_test(test_error_keeps_config),
		cmocka_unit_test(test_key_lines),
		cmocka_unit_test(test_nul_and_line_length),
		cmocka_unit_test(test_file_size_limit),
		cmocka_unit_test(test_report_identity),
		cmocka_unit_test(test_dkim_domain_check),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_sockaddrs),
		cmocka_unit_test(test_mynetworks_match),
		cmocka_unit_test(test_example_conf),
		cmocka_unit_test(test_example_conf_lists_every_key),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_relative_spool),
		cmocka_unit_test(test_config_path),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
