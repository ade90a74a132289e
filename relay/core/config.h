/* The configuration file: `key = value` lines, `#` comments, every key of
 * DESIGN.md with its default. Parsing is pure (bytes in, struct out). */
#ifndef STSRELAY_CONFIG_H
#define STSRELAY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CONFIG_MAX_LISTEN 16
#define CONFIG_MAX_NETWORKS 64
#define CONFIG_MAX_DNS 8
#define CONFIG_MAX_RETRY 32
#define CONFIG_PATH_MAX 1024
#define CONFIG_DEFAULT_PATH "/etc/stsrelay/stsrelay.conf"
#define CONFIG_DEFAULT_USERS "/etc/stsrelay/users" /* auth_users_file */
#define CONFIG_MAX_KEYS 64                         /* room for every key of the table in config.c */

/* tls_default for domains without a policy: opportunistic (also spelt
 * may-plain) = STARTTLS when offered, unverified, else plaintext; encrypt =
 * STARTTLS required, unverified; verify = STARTTLS required, verified. */
enum tls_default { TLS_DEFAULT_OPPORTUNISTIC, TLS_DEFAULT_ENCRYPT, TLS_DEFAULT_VERIFY };
enum config_log_format { CONFIG_LOG_TEXT, CONFIG_LOG_JSON };
/* log_target; AUTO (the key unset): journal under systemd, else stderr */
enum config_log_target {
	CONFIG_LOG_TARGET_AUTO,
	CONFIG_LOG_TARGET_STDERR,
	CONFIG_LOG_TARGET_SYSLOG,
	CONFIG_LOG_TARGET_JOURNAL,
};

struct config_addr {   /* a listen address or a DNS server */
	char host[64]; /* numeric IPv4/IPv6, brackets removed */
	uint16_t port;
	struct sockaddr_storage sa; /* host+port, ready for bind/connect */
	socklen_t salen;
};

/* redis_url, parsed: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (HOST a
 * name, an IPv4 address or [IPv6]; port 6379, db 0 by default; userinfo
 * %XX-decoded). host[0] == '\0': no Redis (the fleet is off). */
struct config_redis {
	char host[256];
	uint16_t port;
	unsigned db;
	char user[128];
	char password[256]; /* never logged */
};

struct config_network { /* a mynetworks entry, e.g. 127.0.0.0/8 */
	int family;     /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	unsigned prefix;
};

struct config {
	struct config_addr listen[CONFIG_MAX_LISTEN];
	size_t nlisten;
	char spool_dir[CONFIG_PATH_MAX];
	char hostname[256];
	struct config_network mynetworks[CONFIG_MAX_NETWORKS];
	size_t nmynetworks;
	uint64_t max_message_size;                      /* bytes */
	struct config_addr dns_servers[CONFIG_MAX_DNS]; /* port 53 if not given */
	size_t ndns_servers;                            /* 0: /etc/resolv.conf */
	char ca_file[CONFIG_PATH_MAX];                  /* "": system store */
	uint16_t smtp_port;
	uint16_t sts_https_port;
	uint64_t sts_fetch_timeout_ms;
	enum tls_default tls_default;
	uint64_t queue_lifetime_s;
	uint64_t retry_schedule_s[CONFIG_MAX_RETRY]; /* last step repeats */
	size_t nretry_schedule;
	unsigned max_connections_per_domain;
	char tlsrpt_org_name[256];   /* default: hostname */
	char tlsrpt_contact[320];    /* default: postmaster@hostname */
	unsigned tlsrpt_send_at_min; /* minutes after 00:00 UTC */
	unsigned max_sessions;
	char user[64]; /* "": do not drop privileges */
	uint64_t tlsrpt_retention_s;
	char dkim_domain[256];
	char dkim_selector[64];
	char dkim_key_file[CONFIG_PATH_MAX];
	enum config_log_format log_format;
	enum config_log_target log_target;
	char alias_root[256]; /* "": local recipients are refused */
	/* metrics_listen: the Prometheus endpoint; port 0 = off. "PORT" alone
	 * means 127.0.0.1:PORT. */
	struct config_addr metrics_listen;
	struct config_redis redis;             /* redis_url */
	char node_name[64];                    /* "": the hostname (config_node_name) */
	bool dane;                             /* DANE (RFC 7672) for MX hosts with TLSA records */
	char tls_policy_file[CONFIG_PATH_MAX]; /* "": no per-domain levels */
	/* relayhost (DESIGN "Remote submission"): "" = deliver to each
	 * domain's MX. "[host]:port" = that host's A/AAAA (no MX lookup),
	 * "host:port" = the MX hosts of host (Postfix's notation); port 25 when
	 * omitted; port 465 means implicit TLS (RFC 8314), any other STARTTLS.
	 * The name is lower case, without brackets or a trailing dot. */
	char relayhost[256];
	uint16_t relayhost_port;
	bool relayhost_mx;                         /* written without brackets: look up its MX */
	bool relayhost_implicit_tls;               /* port 465 */
	char relayhost_auth_file[CONFIG_PATH_MAX]; /* "": no AUTH to the relay host */
	/* Remote submission (RFC 6409 STARTTLS, RFC 8314 implicit TLS), AUTH
	 * against auth_users_file; a listen list may be empty (off). Both need
	 * tls_cert_file and tls_key_file (config_parse checks). */
	struct config_addr submission_listen[CONFIG_MAX_LISTEN];
	size_t nsubmission_listen;
	struct config_addr smtps_listen[CONFIG_MAX_LISTEN];
	size_t nsmtps_listen;
	char tls_cert_file[CONFIG_PATH_MAX]; /* PEM leaf + chain */
	char tls_key_file[CONFIG_PATH_MAX];
	char auth_users_file[CONFIG_PATH_MAX];
	bool received_show_auth;      /* name the AUTH user in Received: */
	unsigned max_sessions_per_ip; /* submission sessions per client address */
	/* Line of each key in the file last parsed (0: not set there, the
	 * default applies), indexed like the key table; see config_key_line(). */
	unsigned key_line[CONFIG_MAX_KEYS];
};

/* True when submission_listen or smtps_listen names an address. */
bool config_submission_on(const struct config *cfg);

/* Fills every field with its default (hostname from gethostname()). */
void config_defaults(struct config *cfg);

/* Parses a whole file's bytes over the defaults already in *cfg. On error
 * returns -1 and writes "FILE:LINE: reason" into err (fname names the file
 * in messages). Unknown keys, bad values and repeated keys are errors. */
int config_parse(struct config *cfg, const char *buf, size_t len, const char *fname, char *err,
		 size_t errlen);

/* config_defaults + read + config_parse, then the paths: a relative
 * spool_dir is allowed only for a file inside the working directory (see
 * config_resolve_spool) and becomes absolute. Returns -1 with err set on
 * failure (unreadable file included). */
int config_load(struct config *cfg, const char *path, char *err, size_t errlen);

/* The spool_dir rule (DESIGN: absolute outside the source tree): an
 * absolute spool_dir stays as it is; a relative one is resolved against the
 * working directory, and is allowed only when the working directory is not
 * "/" and the configuration file (path, resolved) lies below it, which is
 * how scripts/run uses conf/stsrelay.conf from the top of a checkout. So a
 * copy of that file in /etc, started by systemd (working directory /), is
 * refused instead of turning ./var/spool into /var/spool. cfg->spool_dir
 * becomes the absolute path ("." and ".." segments removed). -1 with err
 * ("FILE:LINE: ...") when refused. */
int config_resolve_spool(struct config *cfg, const char *path, char *err, size_t errlen);

/* The line of the parsed file that set key, 0 when the file did not set
 * it (or key is unknown), so later checks (`stsrelay check`) can name
 * FILE:LINE like the parser does. */
unsigned config_key_line(const struct config *cfg, const char *key);

/* RFC 8460 §3: report mail is signed by the reporting domain. 0 when
 * dkim_domain is empty, the domain of tlsrpt_contact (the submitter) or a
 * parent of it; else -1 with the reason in why. Not part of config_parse
 * (a mismatch is a warning at start and in `tlsrpt send`); for `stsrelay
 * check` to report as an error. */
int config_check_dkim_domain(const struct config *cfg, char *why, size_t whylen);

/* The name of this node in a fleet (node_name, else hostname). */
const char *config_node_name(const struct config *cfg);

/* Parses a redis_url (see struct config_redis); "" clears *out. 0, or -1
 * with the reason in why (never quoting the password). */
int config_parse_redis_url(const char *url, struct config_redis *out, char *why, size_t whylen);

/* Which file a subcommand uses: explicit -c path, else $STSRELAY_CONF, else
 * CONFIG_DEFAULT_PATH. */
const char *config_path(const char *explicit_path);

/* True when the client address is inside one of the mynetworks entries
 * (IPv4-mapped IPv6 addresses match IPv4 entries). */
bool config_mynetworks_match(const struct config *cfg, const struct sockaddr *sa);

/* Helpers shared with other parsers: "30s", "5m", "2h", "5d", "1w", plain
 * seconds; sizes "52428800", "50M", "10k". Return -1 on a bad value. */
int config_parse_duration(const char *s, uint64_t *out_seconds);
int config_parse_size(const char *s, uint64_t *out_bytes);

#endif
