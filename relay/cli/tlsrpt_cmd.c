/* `stsrelay tlsrpt show|send|dkim-keygen` (plus `validate` and the test helper
 * `record`): the day's RFC 8460 aggregate, sending it now, and the DKIM key
 * that report mail needs. */
#include "relay/cli/commands.h"

#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "queue/queue.h"
#include "relay/cli/cli.h"
#include "relay/core/clock.h"
#include "relay/core/fs.h"
#include "relay/core/log.h"
#include "relay/net/redis.h"
#include "sts/tlsrpt/fleet.h"
#include "sts/tlsrpt/send.h"
#include "sts/policy.h"
#include "sts/tlsrpt/tlsrpt.h"

#define PROG "stsrelay tlsrpt"
#define FILE_MAX (TLSRPT_REPORT_MAX + 1)
#define DKIM_KEY_BITS 2048
#define FLEET_CONNECT_MS 5000 /* how long a command waits for the fleet's Redis */

struct topts {
	const char *config;
	const char *day;
	const char *selector, *out;
	bool json, lenient, sts_published, force, local;
	const char *domain, *policy_file, *result, *sending_ip, *mx, *mx_ip, *reason;
	long long when, count;
	const char *file;
};

static void usage(FILE *f)
{
	fputs("usage: stsrelay tlsrpt show [--day YYYY-MM-DD] [--json] [--local] [-c FILE]\n"
	      "       stsrelay tlsrpt send [--day YYYY-MM-DD] [-c FILE]\n"
	      "       stsrelay tlsrpt dkim-keygen [--selector S] [--out PATH] [--force] [-c FILE]\n"
	      "       stsrelay tlsrpt validate [--lenient] FILE|-   (JSON or gzip'd JSON)\n"
	      "\n"
	      "  show          the aggregate reports that would be sent for the day\n"
	      "  send          send the day's reports now (mailto: through the queue,\n"
	      "                https: as a POST); each (domain, day, rua) goes out once\n"
	      "  dkim-keygen   a new 2048-bit RSA key for report mail, written to\n"
	      "                --out PATH or dkim_key_file (mode 0600; --force replaces\n"
	      "                an existing one), and on stdout the DNS TXT record of\n"
	      "                --selector S or dkim_selector\n"
	      "  validate      check a report file against RFC 8460 (--lenient: allow\n"
	      "                what other senders get wrong)\n"
	      "  --day YYYY-MM-DD  the UTC day; default the previous one (the one the\n"
	      "                daily run sends); it may be today: the sessions so far\n"
	      "  --json        (show) the RFC 8460 JSON reports instead of text\n"
	      "  --local       (show) with redis_url: this node's sessions only, not\n"
	      "                the fleet's sum that send and the daily run use\n"
	      "  -c FILE       configuration file (else $STSRELAY_CONF, else\n"
	      "                " CONFIG_DEFAULT_PATH ")\n"
	      "  -h, --help    this text\n"
	      "Exit: 0 done, 64 usage, 65 (validate) invalid report, 66 (validate)\n"
	      "unreadable file, 69 the spool cannot be opened, 70 internal error,\n"
	      "71 system error, 73 (dkim-keygen) the key file cannot be created or\n"
	      "exists, 74 I/O error, 75 (send) a report could not be sent\n"
	      "yet (retried by the daemon), or (a fleet) Redis is not reachable or\n"
	      "another node has not merged its counts of the day yet, 77 permission\n"
	      "denied (run it as root),\n"
	      "78 configuration error (e.g. the DKIM key).\n",
	      f);
}

static int parse_opts(int argc, char **argv, struct topts *o)
{
	int i;

	memset(o, 0, sizeof(*o));
	o->count = 1;
	for (i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char **val = NULL;
		long long *num = NULL;

		if (strcmp(a, "-c") == 0)
			val = &o->config;
		else if (strncmp(a, "-c", 2) == 0 && a[2] != '\0')
			o->config = a + 2;
		else if (strcmp(a, "--day") == 0)
			val = &o->day;
		else if (strcmp(a, "--json") == 0)
			o->json = true;
		else if (strcmp(a, "--local") == 0)
			o->local = true;
		else if (strcmp(a, "--lenient") == 0)
			o->lenient = true;
		else if (strcmp(a, "--sts-published") == 0)
			o->sts_published = true;
		else if (strcmp(a, "--selector") == 0)
			val = &o->selector;
		else if (strcmp(a, "--out") == 0)
			val = &o->out;
		else if (strcmp(a, "--force") == 0)
			o->force = true;
		else if (strcmp(a, "--domain") == 0)
			val = &o->domain;
		else if (strcmp(a, "--policy-file") == 0)
			val = &o->policy_file;
		else if (strcmp(a, "--result") == 0)
			val = &o->result;
		else if (strcmp(a, "--sending-ip") == 0)
			val = &o->sending_ip;
		else if (strcmp(a, "--mx") == 0)
			val = &o->mx;
		else if (strcmp(a, "--mx-ip") == 0)
			val = &o->mx_ip;
		else if (strcmp(a, "--reason") == 0)
			val = &o->reason;
		else if (strcmp(a, "--when") == 0)
			num = &o->when;
		else if (strcmp(a, "--count") == 0)
			num = &o->count;
		else if (a[0] == '-' && a[1] != '\0') {
			fprintf(stderr, "%s: unknown option '%s'\n", PROG, a);
			return -1;
		} else if (o->file == NULL) {
			o->file = a;
		} else {
			fprintf(stderr, "%s: too many arguments\n", PROG);
			return -1;
		}
		if (val != NULL || num != NULL) {
			char *end;

			if (i + 1 >= argc) {
				fprintf(stderr, "%s: %s needs a value\n", PROG, a);
				return -1;
			}
			if (val != NULL) {
				*val = argv[++i];
			} else {
				errno = 0;
				*num = strtoll(argv[++i], &end, 10);
				if (errno != 0 || *end != '\0' || *num < 0) {
					fprintf(stderr, "%s: bad number for %s\n", PROG, a);
					return -1;
				}
			}
		}
	}
	return 0;
}

/* The day to work on: --day, else yesterday (UTC). */
static int pick_day(const struct topts *o, char day[TLSRPT_DAY_LEN + 1])
{
	int64_t start;

	if (o->day == NULL) {
		tlsrpt_day_of(clock_now() - 86400, day);
		return 0;
	}
	if (tlsrpt_day_parse(o->day, &start) != 0) {
		fprintf(stderr, "%s: bad day '%s' (want YYYY-MM-DD)\n", PROG, o->day);
		return -1;
	}
	memcpy(day, o->day, TLSRPT_DAY_LEN + 1);
	return 0;
}

/* Run as root for a spool owned by the relay's user: become that user, so
 * files written here (ledger, queue, sessions) stay writable by the daemon. */
static int become_spool_owner(const char *spool_dir)
{
	struct stat sb;

	if (geteuid() != 0 || stat(spool_dir, &sb) != 0 || sb.st_uid == 0)
		return 0;
	/* root's supplementary groups must go too, or files stay open to them */
	if (setgroups(1, &sb.st_gid) != 0 || setgid(sb.st_gid) != 0 || setuid(sb.st_uid) != 0) {
		fprintf(stderr, "%s: cannot switch to the spool owner (uid %u): %s\n", PROG,
			(unsigned)sb.st_uid, strerror(errno));
		return -1;
	}
	return 0;
}

static int load_day(const struct config *cfg, const char *day, struct tlsrpt_day **d)
{
	char err[512];

	if (tlsrpt_day_load(cfg->spool_dir, day, d, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s: %s\n", PROG, err);
		return EX_IOERR;
	}
	if (tlsrpt_day_bad_lines(*d) > 0)
		fprintf(stderr, "%s: %zu torn or corrupt session lines skipped\n", PROG,
			tlsrpt_day_bad_lines(*d));
	return 0;
}

/* ---- a fleet (redis_url): the day summed over every node ---- */

struct fleet_cli {
	struct redis *redis;
	struct tlsrpt_fleet *fleet;
	uv_timer_t timer; /* how long Redis may take to come up */
	const char *day;
	bool wait, started, done;
	enum tlsrpt_fleet_status st;
	struct tlsrpt_day *d;
	char why[512];
};

static void fleet_prepared(void *arg, enum tlsrpt_fleet_status st, struct tlsrpt_day *d,
			   const char *why)
{
	struct fleet_cli *fc = arg;

	fc->done = true;
	fc->st = st;
	fc->d = d;
	snprintf(fc->why, sizeof(fc->why), "%s", why);
	uv_timer_stop(&fc->timer);
}

static void fleet_up(void *arg, bool up)
{
	struct fleet_cli *fc = arg;

	if (!up || fc->started || fc->done)
		return;
	fc->started = true;
	if (tlsrpt_fleet_prepare(fc->fleet, fc->day, fc->wait, fleet_prepared, fc, NULL) != 0) {
		fc->done = true;
		fc->st = TLSRPT_FLEET_DOWN;
		snprintf(fc->why, sizeof(fc->why), "out of memory");
		uv_timer_stop(&fc->timer);
	}
}

static void fleet_timeout(uv_timer_t *t)
{
	struct fleet_cli *fc = t->data;

	if (fc->started)
		return; /* the prepare answers by itself (Redis has its own timeouts) */
	fc->done = true;
	fc->st = TLSRPT_FLEET_DOWN;
	snprintf(fc->why, sizeof(fc->why), "no connection to Redis within %d s",
		 FLEET_CONNECT_MS / 1000);
}

/* Connects to the fleet's Redis on loop and gathers day (this node's
 * sessions merged first; with wait, every other node's too). On READY
 * fc->d is the day; fc->redis and fc->fleet stay for the send job's
 * ledger: fleet_cli_close() them. An exit code: 0, EX_TEMPFAIL (Redis
 * down, nodes not merged; fc->why says which), EX_OSERR. */
static int fleet_cli_load(uv_loop_t *loop, const struct config *cfg, const char *day, bool wait,
			  struct fleet_cli *fc)
{
	struct redis_config rc = { .url = &cfg->redis, .on_state = fleet_up, .arg = fc };
	struct tlsrpt_fleet_config tc = { .loop = loop,
					  .spool_dir = cfg->spool_dir,
					  .node = config_node_name(cfg),
					  .retention_s = cfg->tlsrpt_retention_s };

	memset(fc, 0, sizeof(*fc));
	fc->day = day;
	fc->wait = wait;
	if (uv_timer_init(loop, &fc->timer) != 0)
		return EX_OSERR;
	fc->timer.data = fc;
	if (redis_new(loop, &rc, &fc->redis) != 0)
		return EX_OSERR;
	tc.redis = fc->redis;
	if (tlsrpt_fleet_new(&tc, &fc->fleet) != 0)
		return EX_OSERR;
	uv_timer_start(&fc->timer, fleet_timeout, FLEET_CONNECT_MS, 0);
	while (!fc->done && uv_run(loop, UV_RUN_ONCE) != 0)
		;
	if (!fc->done) {
		fc->st = TLSRPT_FLEET_DOWN;
		snprintf(fc->why, sizeof(fc->why), "nothing to wait for");
	}
	return fc->st == TLSRPT_FLEET_READY ? 0 : EX_TEMPFAIL;
}

static void fleet_cli_close(struct fleet_cli *fc)
{
	tlsrpt_day_free(fc->d);
	fc->d = NULL;
	tlsrpt_fleet_free(fc->fleet);
	fc->fleet = NULL;
	redis_free(fc->redis);
	fc->redis = NULL;
	if (fc->timer.data != NULL && !uv_is_closing((uv_handle_t *)&fc->timer))
		uv_close((uv_handle_t *)&fc->timer, NULL);
}

/* Whether a send of day waits for every node's counts: a day that is over
 * and recent enough for the running daemons to finish merging it (each
 * merges today and the two days before); today has no end to wait for,
 * an older day has all the fleet will ever have. */
static bool wait_for_nodes(const char *day)
{
	int64_t start, now = clock_now();

	return tlsrpt_day_parse(day, &start) == 0 && now >= start + 86400 &&
	       now < start + 3 * 86400;
}

static void print_text(const char *domain, const json_t *r)
{
	const json_t *e;
	size_t i;

	json_array_foreach(json_object_get(r, "policies"), i, e)
	{
		const json_t *pol = json_object_get(e, "policy");
		const json_t *sum = json_object_get(e, "summary");
		const json_t *fd;
		const char *mode = "";
		size_t k;

		json_array_foreach(json_object_get(pol, "policy-string"), k,
				   fd) if (strncmp(json_string_value(fd), "mode: ", 6) == 0)
			mode = json_string_value(fd) + 6;
		printf("%-30s %-16s %-8s success=%lld failure=%lld\n", domain,
		       json_string_value(json_object_get(pol, "policy-type")), mode,
		       (long long)json_integer_value(
			       json_object_get(sum, "total-successful-session-count")),
		       (long long)json_integer_value(
			       json_object_get(sum, "total-failure-session-count")));
		json_array_foreach(json_object_get(e, "failure-details"), k, fd)
		{
			const char *mx = json_string_value(
				json_object_get(fd, "receiving-mx-hostname"));
			const char *ip = json_string_value(json_object_get(fd, "receiving-ip"));
			const char *why = json_string_value(
				json_object_get(fd, "failure-reason-code"));

			printf("    %-26s %s[%s] count=%lld%s%s\n",
			       json_string_value(json_object_get(fd, "result-type")), mx ? mx : "-",
			       ip ? ip : "-",
			       (long long)json_integer_value(
				       json_object_get(fd, "failed-session-count")),
			       why ? " reason=" : "", why ? why : "");
		}
	}
}

static bool have_dkim(const struct config *cfg)
{
	return cfg->dkim_domain[0] && cfg->dkim_selector[0] && cfg->dkim_key_file[0];
}

static void print_skipped(void *arg, const char *rua)
{
	(void)arg;
	printf("    rua %s skipped: report mail needs a DKIM key (RFC 8460 §3)\n", rua);
}

static int cmd_show(const struct topts *o, const struct config *cfg)
{
	struct tlsrpt_meta meta = { cfg->tlsrpt_org_name, cfg->tlsrpt_contact };
	char day[TLSRPT_DAY_LEN + 1];
	struct tlsrpt_day *d;
	json_t *all = json_array();
	size_t i;
	int rc;

	uv_loop_t loop;
	struct fleet_cli fc;
	bool fleet = cfg->redis.host[0] != '\0' && !o->local;

	if (all == NULL || pick_day(o, day) != 0) {
		json_decref(all);
		return EX_USAGE;
	}
	if (fleet) {
		/* what send and the daily run use: every node's counts so far */
		if (uv_loop_init(&loop) != 0) {
			json_decref(all);
			return EX_OSERR;
		}
		rc = fleet_cli_load(&loop, cfg, day, false, &fc);
		d = fc.d;
		fc.d = NULL;
		fleet_cli_close(&fc);
		uv_run(&loop, UV_RUN_DEFAULT);
		if (uv_loop_close(&loop) != 0)
			fprintf(stderr, "%s: handles left open at exit\n", PROG);
		if (rc != 0) {
			fprintf(stderr,
				"%s: the fleet's counts cannot be read: %s (--local shows this "
				"node's)\n",
				PROG, fc.why);
			json_decref(all);
			return rc;
		}
	} else {
		rc = load_day(cfg, day, &d);
		if (rc != 0) {
			json_decref(all);
			return rc;
		}
	}
	if (!o->json)
		printf("TLS-RPT day %s (UTC)%s: %zu policy domain%s\n", day,
		       fleet ? ", every node of the fleet" : "", tlsrpt_day_ndomains(d),
		       tlsrpt_day_ndomains(d) == 1 ? "" : "s");
	if (!have_dkim(cfg))
		fprintf(o->json ? stderr : stdout,
			"note: no DKIM key configured (dkim_domain, dkim_selector, dkim_key_file): "
			"mailto: ruas are skipped, only https: ruas get reports\n");
	for (i = 0; i < tlsrpt_day_ndomains(d); i++) {
		json_t *r = tlsrpt_report_build(d, tlsrpt_day_domain(d, i), &meta);

		if (r == NULL) {
			fprintf(stderr, "%s: out of memory\n", PROG);
			rc = EX_SOFTWARE;
			break;
		}
		if (!o->json) {
			print_text(tlsrpt_day_domain(d, i), r);
			tlsrpt_skipped_foreach(cfg->spool_dir, day, tlsrpt_day_domain(d, i),
					       print_skipped, NULL);
		}
		json_array_append_new(all, r);
	}
	if (rc == 0 && o->json) {
		if (json_dumpf(all, stdout, JSON_INDENT(2)) != 0) {
			rc = EX_IOERR;
		} else {
			putchar('\n');
		}
	}
	json_decref(all);
	tlsrpt_day_free(d);
	return rc;
}

struct send_state {
	bool done;
	struct tlsrpt_job_result res;
};

static void on_job_done(void *arg, const struct tlsrpt_job_result *res)
{
	struct send_state *s = arg;

	s->done = true;
	s->res = *res;
}

/* Report mail written straight into queue/: a running daemon schedules it
 * now; without one it is picked up at the next start. */
static void tell_daemon(void *arg, const char *queue_id)
{
	char req[64], reply[128];

	snprintf(req, sizeof(req), "queued %s", queue_id);
	if (cli_control_request(arg, req, reply, sizeof(reply)) == CLI_CONTROL_NO_DAEMON)
		printf("%s: queued; delivered when the daemon next starts\n", queue_id);
}

static int cmd_send(const struct topts *o, const struct config *cfg)
{
	char day[TLSRPT_DAY_LEN + 1], err[512];
	struct send_state st = { 0 };
	struct tlsrpt_job_env env;
	struct dkim_key *dkim = NULL;
	struct queue *q = NULL;
	struct dns *dns = NULL;
	struct http_client *http = NULL;
	struct fleet_cli fc;
	bool fleet = cfg->redis.host[0] != '\0';
	uv_loop_t loop;
	int rc = EX_SOFTWARE;

	if (pick_day(o, day) != 0)
		return EX_USAGE;
	if (become_spool_owner(cfg->spool_dir) != 0)
		return EX_NOPERM;
	if (have_dkim(cfg)) {
		if (dkim_key_load(cfg->dkim_key_file, cfg->dkim_domain, cfg->dkim_selector, &dkim,
				  err, sizeof(err)) != 0) {
			fprintf(stderr, "%s: DKIM key: %s\n", PROG, err);
			return EX_CONFIG;
		}
	} else {
		log_warn("tlsrpt: dkim_domain/dkim_selector/dkim_key_file not set: no report "
			 "mail can be sent (RFC 8460 §3 requires a DKIM signature); mailto: ruas "
			 "are skipped, https: ruas still get reports");
	}
	if (config_check_dkim_domain(cfg, err, sizeof(err)) != 0)
		log_warn("tlsrpt: %s", err);
	if (queue_open(cfg->spool_dir, true, -1, &q, err, sizeof(err)) != 0) {
		int e = errno;

		fprintf(stderr, "%s: cannot open the spool %s: %s\n", PROG, cfg->spool_dir, err);
		dkim_key_free(dkim);
		return cli_exit_for_errno(e, EX_UNAVAILABLE);
	}
	if (uv_loop_init(&loop) != 0) {
		queue_close(q);
		dkim_key_free(dkim);
		return EX_OSERR;
	}
	memset(&fc, 0, sizeof(fc));
	if (fleet) {
		/* one report per (day, domain, rua) for the whole fleet: the
		 * fleet's sums (every node merged, see wait_for_nodes) and its
		 * ledger */
		rc = fleet_cli_load(&loop, cfg, day, wait_for_nodes(day), &fc);
		if (rc != 0) {
			fprintf(stderr, "%s: %s: the fleet's report is not sent now: %s\n", PROG,
				day, fc.why);
			goto out;
		}
	}
	if (dns_new(&loop, cfg->dns_servers, cfg->ndns_servers, NULL, &dns) != 0 ||
	    http_client_new(&loop, &http) != 0) {
		fprintf(stderr, "%s: cannot start the resolver or the HTTPS client\n", PROG);
		rc = EX_OSERR;
		goto out;
	}
	memset(&env, 0, sizeof(env));
	env.loop = &loop;
	env.cfg = cfg;
	env.queue = q;
	env.dns = dns;
	env.http = http;
	env.dkim = dkim;
	env.enqueued = tell_daemon;
	env.enqueued_arg = (void *)cfg->spool_dir;
	if (fleet) {
		env.data = fc.d;
		fc.d = NULL;
		env.ledger = tlsrpt_fleet_ledger(fc.fleet);
	}
	if (tlsrpt_job_start(&env, day, on_job_done, &st, NULL) != 0) {
		fprintf(stderr, "%s: cannot start sending %s\n", PROG, day);
		rc = EX_IOERR;
		goto out;
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	if (!st.done) {
		fprintf(stderr, "%s: the send job did not finish\n", PROG);
		goto out;
	}
	printf("tlsrpt %s: %u domain%s, %u sent, %u already sent, %u failed, %u without "
	       "_smtp._tls, %u skipped (no DKIM key)",
	       day, st.res.domains, st.res.domains == 1 ? "" : "s", st.res.sent, st.res.already,
	       st.res.failed, st.res.no_record, st.res.skipped);
	if (st.res.elsewhere > 0) /* a fleet: sent by the node that claimed them */
		printf(", %u being sent by another node", st.res.elsewhere);
	printf("\n");
	rc = st.res.failed == 0 ? 0 : EX_TEMPFAIL;
	/* the daily action also applies the retention (tlsrpt_retention) */
	if (tlsrpt_prune(cfg->spool_dir, clock_now(), cfg->tlsrpt_retention_s) < 0)
		fprintf(stderr, "%s: pruning old TLS-RPT data failed\n", PROG);
out:
	dns_free(dns);
	if (http != NULL)
		http_client_free(http);
	fleet_cli_close(&fc);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		fprintf(stderr, "%s: handles left open at exit\n", PROG);
	queue_close(q);
	dkim_key_free(dkim);
	return rc;
}

/* A private key may only live where nobody else can swap or read it: in a
 * directory owned by root and writable by nobody else, or in one of ours
 * with mode 0700. */
static int key_dir_safe(const char *dir, char *why, size_t whylen)
{
	struct stat sb;

	if (stat(dir, &sb) != 0) {
		snprintf(why, whylen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(sb.st_mode)) {
		snprintf(why, whylen, "%s: not a directory", dir);
		return -1;
	}
	if ((sb.st_uid == 0 && (sb.st_mode & 022) == 0) ||
	    (sb.st_uid == geteuid() && (sb.st_mode & 077) == 0))
		return 0;
	snprintf(why, whylen,
		 "%s: unsafe for a private key (mode %04o, owner uid %u): use a root-owned "
		 "directory nobody else can write, or one of yours with mode 0700",
		 dir, (unsigned)(sb.st_mode & 07777), (unsigned)sb.st_uid);
	return -1;
}

/* Writes the key as path, mode 0600, owned by the daemon's user when run as
 * root (the daemon reads it after dropping privileges). Through a temporary
 * file in the same directory, fsync'd, then link(2) (fails if path exists)
 * or, with force, rename(2); the directory is fsync'd. 0 or -1 (why set). */
static int write_key(const char *path, const char *dir, const char *pem, size_t len,
		     const char *user, bool force, char *why, size_t whylen)
{
	char tmp[CONFIG_PATH_MAX + 64];
	int fd, rc = -1;

	snprintf(tmp, sizeof(tmp), "%s/.dkim-keygen.tmp.%ld", dir, (long)getpid());
	if (strlen(tmp) + 1 >= sizeof(tmp)) {
		snprintf(why, whylen, "path too long");
		return -1;
	}
	(void)unlink(tmp); /* a leftover of a crashed run */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(why, whylen, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	if (geteuid() == 0 && user[0] != '\0') {
		struct passwd *pw = getpwnam(user);

		if (pw == NULL) {
			snprintf(why, whylen, "user '%s' (from the config) does not exist", user);
			goto out;
		}
		if (fchown(fd, pw->pw_uid, pw->pw_gid) != 0) {
			snprintf(why, whylen, "chown %s: %s", tmp, strerror(errno));
			goto out;
		}
	}
	if (core_fs_write_all(fd, pem, len, NULL) != 0 || core_fs_fsync(fd) != 0) {
		snprintf(why, whylen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	if (core_fs_close(fd) != 0) {
		fd = -1;
		snprintf(why, whylen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if ((force ? rename(tmp, path) : link(tmp, path)) != 0) {
		snprintf(why, whylen, "%s: %s%s", path, strerror(errno),
			 errno == EEXIST ? " (--force replaces it)" : "");
		goto out;
	}
	if (core_fs_fsync_dir(dir) != 0) {
		snprintf(why, whylen, "fsync %s: %s", dir, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	(void)unlink(tmp); /* after link(2) the key has two names: drop the temporary one */
	return rc;
}

/* `tlsrpt dkim-keygen`: a 2048-bit RSA key for signing report mail (RFC
 * 8460 §3) and, on stdout, the exact TXT record to publish. */
static int cmd_dkim_keygen(const struct topts *o, const struct config *cfg)
{
	const char *path = o->out != NULL ? o->out : cfg->dkim_key_file;
	const char *selector = o->selector != NULL ? o->selector : cfg->dkim_selector;
	const char *domain = cfg->dkim_domain[0] ? cfg->dkim_domain
						 : tlsrpt_submitter(cfg->tlsrpt_contact);
	char dir[CONFIG_PATH_MAX], why[1400], *pem = NULL, *pub = NULL, *record = NULL;
	size_t pemlen = 0;
	struct stat sb;
	int rc = EX_SOFTWARE;

	if (path[0] == '\0') {
		fprintf(stderr, "%s dkim-keygen: where to? give --out PATH or set dkim_key_file\n",
			PROG);
		return EX_USAGE;
	}
	if (selector[0] == '\0') {
		fprintf(stderr, "%s dkim-keygen: give --selector S or set dkim_selector\n", PROG);
		return EX_USAGE;
	}
	if (strlen(path) >= sizeof(dir)) {
		fprintf(stderr, "%s dkim-keygen: path too long\n", PROG);
		return EX_USAGE;
	}
	{
		char copy[CONFIG_PATH_MAX];

		snprintf(copy, sizeof(copy), "%s", path);
		snprintf(dir, sizeof(dir), "%s", dirname(copy)); /* may point into copy */
	}
	if (key_dir_safe(dir, why, sizeof(why)) != 0) {
		fprintf(stderr, "%s dkim-keygen: %s\n", PROG, why);
		return EX_CANTCREAT;
	}
	if (!o->force && lstat(path, &sb) == 0) {
		fprintf(stderr, "%s dkim-keygen: %s exists; not replaced (--force replaces it)\n",
			PROG, path);
		return EX_CANTCREAT;
	}
	if (dkim_keygen(DKIM_KEY_BITS, &pem, &pemlen, &pub, why, sizeof(why)) != 0) {
		fprintf(stderr, "%s dkim-keygen: %s\n", PROG, why);
		return EX_SOFTWARE;
	}
	record = dkim_txt_record(selector, domain, pub);
	if (record == NULL) {
		fprintf(stderr,
			"%s dkim-keygen: selector '%s' or domain '%s' cannot be a DNS name\n", PROG,
			selector, domain);
		rc = EX_USAGE;
		goto out;
	}
	if (write_key(path, dir, pem, pemlen, cfg->user, o->force, why, sizeof(why)) != 0) {
		fprintf(stderr, "%s dkim-keygen: %s\n", PROG, why);
		rc = EX_CANTCREAT;
		goto out;
	}
	fprintf(stderr,
		"%s dkim-keygen: wrote a %d-bit RSA key to %s (mode 0600)\n"
		"publish the TXT record printed on stdout in DNS, then set\n"
		"  dkim_domain = %s\n  dkim_selector = %s\n  dkim_key_file = %s\n",
		PROG, DKIM_KEY_BITS, path, domain, selector, path);
	printf("%s\n", record);
	rc = fflush(stdout) == 0 ? 0 : EX_IOERR;
out:
	if (pem != NULL) {
		OPENSSL_cleanse(pem, pemlen);
		free(pem);
	}
	free(pub);
	free(record);
	return rc;
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	char *buf;

	if (f == NULL)
		return NULL;
	buf = malloc(FILE_MAX + 1);
	if (buf != NULL) {
		*len = fread(buf, 1, FILE_MAX + 1, f);
		if (ferror(f) || *len > FILE_MAX) {
			free(buf);
			buf = NULL;
		}
	}
	if (f != stdin)
		fclose(f);
	return buf;
}

static int cmd_validate(const struct topts *o)
{
	char err[512], *buf;
	size_t len = 0;

	if (o->file == NULL) {
		usage(stderr);
		return EX_USAGE;
	}
	buf = read_all(o->file, &len);
	if (buf == NULL) {
		fprintf(stderr, "%s: %s: unreadable or too large\n", PROG, o->file);
		return EX_NOINPUT;
	}
	if (tlsrpt_validate_bytes(buf, len,
				  o->lenient ? TLSRPT_VALIDATE_LENIENT : TLSRPT_VALIDATE_STRICT,
				  err, sizeof(err)) != 0) {
		printf("invalid: %s\n", err);
		free(buf);
		return EX_DATAERR;
	}
	printf("ok\n");
	free(buf);
	return 0;
}

/* Test helper (not in the usage text): records sessions as the delivery
 * engine would, so the integration tests can build a day of traffic. */
static int cmd_record(const struct topts *o, const struct config *cfg)
{
	struct tlsrpt_session s;
	struct sts_policy pol;
	struct tlsrpt_store *st;
	char err[512], *body = NULL;
	long long i;
	int rc = 0;

	memset(&s, 0, sizeof(s));
	if (o->domain == NULL || o->result == NULL ||
	    smtp_tls_result_parse(o->result, &s.result) != 0) {
		fprintf(stderr, "%s record: needs --domain and a valid --result\n", PROG);
		return EX_USAGE;
	}
	if (o->policy_file != NULL) {
		size_t len = 0;
		struct sts_policy_err perr;

		body = read_all(o->policy_file, &len);
		if (body == NULL || sts_policy_parse(body, len, &pol, &perr) != 0) {
			fprintf(stderr, "%s record: bad policy file\n", PROG);
			free(body);
			return EX_DATAERR;
		}
		s.policy = &pol;
		s.policy_text = body; /* reported as published, like a fetch */
		s.policy_text_len = len;
	}
	s.domain = o->domain;
	s.sts_published = o->sts_published;
	s.sending_mta_ip = o->sending_ip;
	s.mx_host = o->mx;
	s.mx_ip = o->mx_ip;
	s.reason = o->reason;
	s.when = o->when;
	if (become_spool_owner(cfg->spool_dir) != 0) {
		free(body);
		return EX_NOPERM;
	}
	if (tlsrpt_store_open(cfg->spool_dir, NULL, &st, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s record: %s\n", PROG, err);
		free(body);
		return EX_CANTCREAT;
	}
	for (i = 0; i < o->count && rc == 0; i++)
		if (tlsrpt_record(st, &s) != 0)
			rc = EX_IOERR;
	if (tlsrpt_store_sync(st) != 0)
		rc = EX_IOERR;
	tlsrpt_store_close(st);
	free(body);
	return rc;
}

int cmd_tlsrpt(int argc, char **argv)
{
	struct config *cfg;
	struct topts o;
	int rc;

	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? EX_USAGE : 0;
	}
	for (int i = 2; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			usage(stdout);
			return 0;
		}
	}
	if (parse_opts(argc, argv, &o) != 0) {
		usage(stderr);
		return EX_USAGE;
	}
	if (strcmp(argv[1], "validate") == 0)
		return cmd_validate(&o);
	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL)
		return EX_OSERR;
	rc = cli_load_config(PROG, o.config, cfg);
	if (rc != 0) {
		free(cfg);
		return rc;
	}
	log_setup("stsrelay",
		  cfg->log_format == CONFIG_LOG_JSON ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT, 0);
	if (strcmp(argv[1], "show") == 0) {
		rc = cmd_show(&o, cfg);
	} else if (strcmp(argv[1], "send") == 0) {
		rc = cmd_send(&o, cfg);
	} else if (strcmp(argv[1], "record") == 0) {
		rc = cmd_record(&o, cfg);
	} else if (strcmp(argv[1], "dkim-keygen") == 0) {
		rc = cmd_dkim_keygen(&o, cfg);
	} else {
		fprintf(stderr, "%s: unknown subcommand '%s'\n", PROG, argv[1]);
		usage(stderr);
		rc = EX_USAGE;
	}
	free(cfg);
	return rc;
}
