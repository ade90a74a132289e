/* `stsrelay sts check DOMAIN` and `stsrelay sts cache`: what the MTA-STS
 * engine would decide for a domain now, and the policies it has cached. */
#include "relay/cli/cli.h"
#include "relay/core/clock.h"
#include "relay/cli/commands.h"
#include "relay/net/dns.h"
#include "relay/net/dane.h"
#include "relay/core/log.h"
#include "relay/core/tls_policy.h"
#include "relay/cli/mx_probe.h"
#include "sts/dns.h"
#include "sts/cache.h"
#include "sts/engine.h"
#include "sts/policy.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

/* `sts check` reads the daemon's on-disk cache but does not write it unless
 * --update-cache is given: a debugging tool should not change what the
 * daemon does (and a running daemon reads the directory only at start).
 * --update-cache lets an operator (and the tests) prime the cache. */
struct sopts {
	const char *config;
	const char *domain;
	bool json, probe, update_cache;
};

static void sts_usage(FILE *f)
{
	fputs("usage: stsrelay sts check DOMAIN [--json] [--probe] [--update-cache] [-c FILE]\n"
	      "       stsrelay sts cache [--json] [-c FILE]\n"
	      "\n"
	      "sts check: the _mta-sts TXT record, the policy (from the cache or fetched\n"
	      "now), the MX hosts and whether each matches the policy, the DANE verdict\n"
	      "of each (its TLSA records, when DNSSEC vouches for them), and the decision.\n"
	      "  --json          one JSON document instead of text\n"
	      "  --probe         also connect to each MX host on smtp_port: greeting, EHLO,\n"
	      "                  STARTTLS, TLS handshake (SNI = MX name) and the certificate\n"
	      "                  check against ca_file or the system store (where DANE\n"
	      "                  applies: against the TLSA records, SNI = their base\n"
	      "                  domain), then QUIT (no mail is sent); each stage waits at\n"
	      "                  most 10 s\n"
	      "                  (STSRELAY_SMTP_TIMEOUT=SECONDS overrides)\n"
	      "  --update-cache  write a newly fetched policy into the daemon's cache under\n"
	      "                  spool_dir/sts (without it the cache is only read); a running\n"
	      "                  daemon reads that directory at start only\n"
	      "sts cache: the cached policies with id, mode, fetch and expiry times.\n"
	      "  --json          (cache) one JSON document instead of text\n"
	      "  -c FILE         configuration file (else $STSRELAY_CONF, else\n"
	      "                  " CONFIG_DEFAULT_PATH ")\n"
	      "  -h, --help      this text\n"
	      "Exit: 0 done (check: mail can go as the policy demands, or none applies),\n"
	      "1 check: an enforce policy cannot be met (no MX matches it; with --probe,\n"
	      "none of the matching ones passes STARTTLS and the certificate check), or\n"
	      "DANE refuses every MX host (failed TLSA lookups, level dane without\n"
	      "records, with --probe records that match nothing),\n"
	      "64 usage, 65 not a domain name, 70 the engine could not run, 71 system\n"
	      "error, 74 the cache cannot be read, 75 check: temporary failure of the TXT\n"
	      "lookup, the policy fetch or the MX lookup (decision tempfail), 78\n"
	      "configuration error.\n",
	      f);
}

static int parse_opts(int argc, char **argv, struct sopts *o, bool is_check)
{
	int i;

	memset(o, 0, sizeof(*o));
	for (i = 2; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "-c") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "stsrelay: -c needs a file name\n");
				return -1;
			}
			o->config = argv[++i];
		} else if (strncmp(a, "-c", 2) == 0 && a[2] != '\0') {
			o->config = a + 2;
		} else if (strcmp(a, "--json") == 0) {
			o->json = true;
		} else if (is_check && strcmp(a, "--probe") == 0) {
			o->probe = true;
		} else if (is_check && strcmp(a, "--update-cache") == 0) {
			o->update_cache = true;
		} else if (a[0] == '-' && a[1] != '\0') {
			fprintf(stderr, "stsrelay: sts: unknown option '%s'\n", a);
			return -1;
		} else if (is_check && o->domain == NULL) {
			o->domain = a;
		} else {
			fprintf(stderr, "stsrelay: sts: unexpected argument '%s'\n", a);
			return -1;
		}
	}
	if (is_check && o->domain == NULL) {
		fprintf(stderr, "stsrelay: sts check needs a DOMAIN\n");
		return -1;
	}
	return 0;
}

static int cache_dir(const struct config *cfg, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/%s", cfg->spool_dir, STS_CACHE_SUBDIR);

	if (n < 0 || (size_t)n >= len) {
		fprintf(stderr, "stsrelay: spool_dir too long\n");
		return -1;
	}
	return 0;
}

static char *rfc3339(int64_t t, char *buf, size_t len)
{
	return clock_rfc3339(t, buf, len);
}

static json_t *mx_patterns(const struct sts_policy *p)
{
	json_t *a = json_array();
	size_t i;

	for (i = 0; a != NULL && i < p->mx_count; i++)
		json_array_append_new(a, json_string(sts_policy_mx(p, i)));
	return a;
}

/* ---- sts check ---- */

struct probe_slot {
	bool started, done;
	size_t *pending;
	struct mx_probe_result res;
};

/* What DANE says about one MX host (the delivery's rules, relay/net/dane.h). */
struct dane_slot {
	bool looked_up, done;
	const char *why; /* when not looked up: why DANE does not apply */
	size_t *pending;
	struct dane_result res;
};

struct check {
	struct sts_verdict *v;
	bool v_done;
	struct dns_mx_result *mx;
	bool mx_done;
	bool probe;
	struct probe_slot *probes; /* one per MX host when probing */
	size_t probes_pending;
	uint16_t smtp_port;
	bool dane_on;            /* `dane` (or level dane), not level sts-only */
	bool dane_required;      /* tls_policy_file level dane */
	struct dane_slot *danes; /* one per MX host */
	size_t danes_pending;
};

static void on_dane(void *arg, const struct dane_result *res)
{
	struct dane_slot *s = arg;

	s->res = *res;
	s->done = true;
	(*s->pending)--;
}

/* The TLSA verdict of every MX host, as the delivery would find it. */
static int run_dane(struct check *c, struct dns *dns, uint16_t port, uv_loop_t *loop)
{
	size_t i;

	if (c->mx == NULL || c->mx->nhosts == 0)
		return 0;
	c->danes = calloc(c->mx->nhosts, sizeof(*c->danes));
	if (c->danes == NULL)
		return -1;
	for (i = 0; i < c->mx->nhosts; i++) {
		struct dane_slot *s = &c->danes[i];

		s->pending = &c->danes_pending;
		if (!c->dane_on) {
			s->why = "dane = off (or level sts-only) for this domain";
			continue;
		}
		if (!dane_applies(c->mx, &c->mx->hosts[i], &s->why))
			continue;
		c->danes_pending++;
		if (dane_lookup(dns, &c->mx->hosts[i], port, on_dane, s, NULL) != 0) {
			c->danes_pending--;
			s->why = "the TLSA lookup could not start";
			continue;
		}
		s->looked_up = true;
	}
	while (c->danes_pending > 0)
		if (uv_run(loop, UV_RUN_ONCE) == 0 && c->danes_pending > 0)
			break;
	return c->danes_pending == 0 ? 0 : -1;
}

static bool dane_usable(const struct check *c, size_t i)
{
	return c->danes != NULL && c->danes[i].done && c->danes[i].res.state == DANE_USABLE;
}

static bool dane_failed(const struct check *c, size_t i)
{
	return c->danes != NULL && c->danes[i].done && c->danes[i].res.state == DANE_FAILED;
}

/* The daemon would not deliver to host i because of DANE: its TLSA lookup
 * failed, level dane finds no usable records, or (probed) the TLSA records
 * did not match what the host presented. */
static bool dane_refuses(const struct check *c, size_t i)
{
	if (dane_failed(c, i) || (c->dane_required && !dane_usable(c, i)))
		return true;
	return dane_usable(c, i) && c->probes != NULL && c->probes[i].started &&
	       !c->probes[i].res.verified;
}

static void on_probe(void *arg, const struct mx_probe_result *res);

#define PROBE_DEFAULT_TIMEOUT_MS 10000 /* per stage: a debugging tool must not hang */

/* Probes every MX host at once (in parallel: each is bounded by its stage
 * timeouts) and runs the loop until all have answered. -1: local error. */
static int run_probes(struct check *c, const struct config *cfg, uv_loop_t *loop)
{
	struct mx_probe_config pc;
	struct smtp_tls_ctx *tls;
	char err[256];
	size_t i;

	if (c->mx == NULL || c->mx->nhosts == 0)
		return 0;
	c->probes = calloc(c->mx->nhosts, sizeof(*c->probes));
	if (c->probes == NULL)
		return -1;
	tls = smtp_tls_ctx_new(cfg->ca_file[0] ? cfg->ca_file : NULL, err, sizeof(err));
	if (tls == NULL) {
		fprintf(stderr, "stsrelay: sts check: TLS: %s\n", err);
		return -1;
	}
	memset(&pc, 0, sizeof(pc));
	pc.loop = loop;
	pc.tls = tls;
	pc.helo_name = cfg->hostname;
	pc.port = cfg->smtp_port;
	pc.stage_timeout_ms = smtp_conn_env_timeout_ms("STSRELAY_SMTP_TIMEOUT",
						       PROBE_DEFAULT_TIMEOUT_MS);
	pc.connect_timeout_ms = smtp_conn_env_timeout_ms("STSRELAY_CONNECT_TIMEOUT",
							 pc.stage_timeout_ms);
	for (i = 0; i < c->mx->nhosts; i++) {
		const struct dns_mx_host *h = &c->mx->hosts[i];
		struct probe_slot *s = &c->probes[i];

		s->pending = &c->probes_pending;
		if (h->naddrs == 0 || dane_failed(c, i))
			continue; /* a failed TLSA lookup: the daemon never connects */
		c->probes_pending++;
		if (mx_probe_start(&pc, h->name, h->addrs, h->naddrs,
				   dane_usable(c, i)
					   ? &(struct smtp_conn_dane){ &c->danes[i].res.tlsa,
								       c->danes[i].res.base }
					   : NULL,
				   on_probe, s) != 0) {
			c->probes_pending--;
			continue; /* printed as not probed */
		}
		s->started = true;
	}
	while (c->probes_pending > 0)
		if (uv_run(loop, UV_RUN_ONCE) == 0 && c->probes_pending > 0)
			break;
	smtp_tls_ctx_free(tls);
	return c->probes_pending == 0 ? 0 : -1;
}

static void on_probe(void *arg, const struct mx_probe_result *res)
{
	struct probe_slot *s = arg;

	s->res = *res;
	s->done = true;
	(*s->pending)--;
}

/* "certificate: verified", "certificate: certificate-host-mismatch (hostname
 * mismatch)": one line that answers "why was this MX not used?". */
static void print_probe_text(const struct dns_mx_host *h, const struct probe_slot *s,
			     const char *match)
{
	const struct mx_probe_result *r = &s->res;
	const char *rt = r->result_type != SMTP_TLS_RESULT_SUCCESS
				 ? smtp_tls_result_name(r->result_type)
				 : NULL;

	printf("           %s  pref %u  policy match: %s  ", h->name, h->preference, match);
	if (!s->started) {
		if (h->naddrs > 0)
			printf("not probed: its TLSA lookup failed (dnssec-invalid)\n");
		else
			printf("not probed: no address (%s)\n",
			       h->status == DNS_OK ? "no A/AAAA record"
						   : dns_status_name(h->status));
		return;
	}
	if (!r->connected) {
		printf("connection failed: %s\n", r->detail);
		return;
	}
	printf("[%s]  ", r->address);
	if (!r->esmtp && !r->starttls) {
		printf("STARTTLS: %s  (%s)\n", rt != NULL ? "no" : "unknown", r->detail);
		return;
	}
	if (!r->starttls) {
		printf("STARTTLS: no  (%s: %s)\n", rt != NULL ? rt : "error", r->detail);
		return;
	}
	if (!r->tls) {
		printf("STARTTLS: yes  TLS: failed  (%s: %s)\n", rt != NULL ? rt : "error",
		       r->detail);
		return;
	}
	printf("STARTTLS: yes  %s  %s: ", r->tls_version, r->dane ? "DANE" : "certificate");
	if (r->verified)
		printf(r->dane ? "verified by TLSA" : "verified");
	else
		printf("%s (%s)", rt != NULL ? rt : "not verified", r->detail);
	if (r->verified && r->detail[0])
		printf("  (then: %s)", r->detail);
	printf("\n");
}

static json_t *probe_json(const struct dns_mx_host *h, const struct probe_slot *s)
{
	const struct mx_probe_result *r = &s->res;
	json_t *o;

	if (!s->started)
		return json_pack("{s:b, s:b, s:n, s:b, s:n, s:n, s:s}", "connected", 0, "starttls",
				 0, "tls_version", "verified", 0, "result_type", "address",
				 "detail",
				 h->status == DNS_OK ? "no address" : dns_status_name(h->status));
	o = json_pack("{s:b, s:s, s:b, s:o, s:b, s:o, s:s, s:b}", "connected", r->connected,
		      "address", r->address, "starttls", r->starttls, "tls_version",
		      r->tls ? json_string(r->tls_version) : json_null(), "verified", r->verified,
		      "result_type",
		      r->result_type != SMTP_TLS_RESULT_SUCCESS
			      ? json_string(smtp_tls_result_name(r->result_type))
			      : json_null(),
		      "detail", r->detail, "dane", r->dane);
	return o;
}

/* The DANE outcome of host i: "usable" (DANE decides; with --probe:
 * "verified" or the RFC 8460 result type of the failed check), "none"
 * (DANE does not apply) or "dnssec-invalid" (the lookup failed: not used). */
static const char *dane_result(const struct check *c, size_t i)
{
	const struct dane_slot *d = &c->danes[i];

	if (!d->done || d->res.state == DANE_NONE)
		return "none";
	if (d->res.state == DANE_FAILED)
		return "dnssec-invalid";
	if (c->probes == NULL || !c->probes[i].started)
		return "usable";
	if (c->probes[i].res.verified)
		return "verified";
	return c->probes[i].res.result_type != SMTP_TLS_RESULT_SUCCESS
		       ? smtp_tls_result_name(c->probes[i].res.result_type)
		       : "tlsa-invalid";
}

static json_t *dane_json(const struct check *c, size_t i)
{
	const struct dane_slot *d = &c->danes[i];
	json_t *recs = json_array();

	for (size_t k = 0; d->done && recs != NULL && k < d->res.tlsa.n; k++) {
		char one[SMTP_TLSA_TEXT_MAX];

		if (smtp_tlsa_format(&d->res.tlsa.rec[k], one, sizeof(one)) >= 0)
			json_array_append_new(recs, json_string(one));
	}
	return json_pack("{s:o, s:b, s:s, s:s, s:s?}", "tlsa", recs ? recs : json_array(), "secure",
			 d->done && d->res.secure, "result", dane_result(c, i), "detail",
			 d->done ? d->res.why : d->why, "name", d->done ? d->res.qname : NULL);
}

static void print_dane_text(const struct check *c, size_t i)
{
	const struct dane_slot *d = &c->danes[i];
	const char *r = dane_result(c, i);

	printf("           dane: %s", r);
	if (d->done && d->res.state == DANE_USABLE)
		printf(" (%zu usable TLSA record%s at %s)", smtp_tlsa_count_usable(&d->res.tlsa),
		       smtp_tlsa_count_usable(&d->res.tlsa) == 1 ? "" : "s", d->res.qname);
	else if (d->done)
		printf(" (%s%s%s)", d->res.why, d->res.qname[0] ? " at " : "", d->res.qname);
	else if (d->why != NULL && d->why[0])
		printf(" (%s)", d->why);
	printf("\n");
}

static void on_verdict(void *arg, struct sts_verdict *v)
{
	struct check *c = arg;

	c->v = v;
	c->v_done = true;
}

static void on_mx(struct dns_mx_result *res, void *arg)
{
	struct check *c = arg;

	c->mx = res;
	c->mx_done = true;
}

static const char *txt_status(const struct sts_verdict *v)
{
	if (v->txt_dns != STS_DNS_OK)
		return sts_dns_status_name(v->txt_dns);
	return sts_txt_result_name(v->txt_result);
}

static bool has_policy(const struct sts_verdict *v)
{
	return v->source != STS_SOURCE_NONE;
}

/* No policy could be learnt now although there may be one: the TXT lookup
 * failed temporarily, or a TXT record names a policy that could not be
 * fetched (network, HTTP status, media type, size), and nothing is cached.
 * The daemon delivers as "absent" meanwhile and tries again; `sts check`
 * says "tempfail" and exits 75 instead of pretending there is no policy.
 * (A policy that was fetched but is invalid, or whose host has a bad
 * certificate, is the domain's error, not a temporary one: "absent".) */
static bool policy_tempfail(const struct sts_verdict *v)
{
	if (has_policy(v))
		return false;
	return v->txt_dns == STS_DNS_TEMPFAIL ||
	       v->error_type == SMTP_TLS_RESULT_STS_POLICY_FETCH_ERROR;
}

static const char *decision_name(const struct sts_verdict *v)
{
	return policy_tempfail(v) ? "tempfail" : sts_decision_name(v->decision);
}

/* An MX the daemon may use under enforce: it matches the policy and, when
 * probed, offered STARTTLS with a certificate that verified. */
static bool mx_usable(const struct check *c, size_t i)
{
	const struct probe_slot *s;

	if (!sts_mx_match(&c->v->policy, c->mx->hosts[i].name, NULL) || dane_refuses(c, i))
		return false;
	if (c->probes == NULL)
		return true;
	s = &c->probes[i];
	return s->started && s->res.connected && s->res.starttls && s->res.tls && s->res.verified;
}

/* The exit code and, in why, the sentence that explains it:
 *   0   mail can go as the policy demands (or no policy applies);
 *   1   an enforce policy cannot be met: no MX matches it (or, probed,
 *       none of the matching ones offers STARTTLS with a valid certificate);
 *       or DANE refuses every MX host with an address (dane_refuses);
 *   75  temporary: see policy_tempfail, or the MX lookup failed for now. */
static int check_result(const struct check *c, char *why, size_t whylen)
{
	const struct sts_verdict *v = c->v;
	size_t i, n = c->mx != NULL ? c->mx->nhosts : 0, refused = 0, others = 0;

	if (policy_tempfail(v)) {
		snprintf(why, whylen,
			 "temporary failure: %s; no policy is known until it clears (the "
			 "daemon meanwhile delivers as if the domain had none)",
			 v->txt_dns == STS_DNS_TEMPFAIL ? "the _mta-sts TXT lookup failed"
							: "the policy could not be fetched");
		return EX_TEMPFAIL;
	}
	if (c->mx == NULL || c->mx->status == DNS_TEMPFAIL) {
		snprintf(why, whylen, "temporary failure: the MX lookup failed");
		return EX_TEMPFAIL;
	}
	for (i = 0; i < n && c->danes != NULL; i++) {
		if (dane_refuses(c, i))
			refused++;
		else if (c->mx->hosts[i].naddrs > 0)
			others++;
	}
	if (refused > 0 && others == 0) {
		snprintf(why, whylen,
			 "fails: DANE refuses every MX host (%s): mail stays deferred (4.7.5) and "
			 "bounces after queue_lifetime",
			 c->dane_required ? "level dane needs usable DNSSEC-validated TLSA records"
					  : "a TLSA lookup failed or no TLSA record matched");
		return 1;
	}
	if (v->decision != STS_DECISION_ENFORCE) {
		snprintf(why, whylen, "ok: %s",
			 v->decision == STS_DECISION_TESTING
				 ? "testing policy: failures are reported, mail is delivered"
				 : "no policy is enforced");
		return 0;
	}
	for (i = 0; i < n; i++)
		if (mx_usable(c, i)) {
			snprintf(why, whylen, "ok: %s matches the enforce policy%s",
				 c->mx->hosts[i].name,
				 c->probes != NULL ? " and passed the TLS checks" : "");
			return 0;
		}
	snprintf(why, whylen,
		 "fails: no MX host %s: mail stays deferred (4.4.8/4.7.5) and bounces "
		 "after queue_lifetime",
		 c->probes != NULL ? "both matches the enforce policy and passes the TLS checks"
				   : "matches the enforce policy");
	return 1;
}

static int print_check_json(const struct check *c, const char *why)
{
	const struct sts_verdict *v = c->v;
	json_t *root = json_object(), *mxs = json_array();
	char t1[32], t2[32];
	size_t i;
	char *s;

	if (root == NULL || mxs == NULL)
		return EX_SOFTWARE;
	json_object_set_new(root, "domain", json_string(v->domain));
	if (v->txt_dns == STS_DNS_OK && v->txt_result == STS_TXT_FOUND)
		json_object_set_new(
			root, "txt",
			json_pack("{s:s, s:s}", "record", v->txt_record, "id", v->txt_id));
	else
		json_object_set_new(root, "txt", json_null());
	json_object_set_new(root, "txt_status", json_string(txt_status(v)));
	json_object_set_new(root, "txt_detail", json_string(v->txt_detail));
	if (has_policy(v)) {
		json_object_set_new(root, "policy",
				    json_pack("{s:s, s:s, s:o, s:I, s:s, s:s, s:s}", "id", v->id,
					      "mode", sts_policy_mode_name(v->policy.mode), "mx",
					      mx_patterns(&v->policy), "max_age",
					      (json_int_t)v->policy.max_age, "fetched_at",
					      rfc3339(v->fetched_at, t1, sizeof(t1)), "expires_at",
					      rfc3339(v->expires_at, t2, sizeof(t2)), "source",
					      sts_source_name(v->source)));
	} else {
		json_object_set_new(root, "policy", json_null());
	}
	if (v->error_type != SMTP_TLS_RESULT_SUCCESS)
		json_object_set_new(root, "error",
				    json_pack("{s:s, s:s}", "result_type",
					      smtp_tls_result_name(v->error_type), "detail",
					      v->error_detail));
	else
		json_object_set_new(root, "error", json_null());
	for (i = 0; c->mx != NULL && i < c->mx->nhosts; i++) {
		const struct dns_mx_host *h = &c->mx->hosts[i];
		bool match = has_policy(v) && sts_mx_match(&v->policy, h->name, NULL);

		json_t *m = json_pack("{s:s, s:I, s:b}", "host", h->name, "preference",
				      (json_int_t)h->preference, "policy_match", match);

		if (m != NULL && c->probes != NULL)
			json_object_set_new(m, "probe", probe_json(h, &c->probes[i]));
		if (m != NULL && c->danes != NULL)
			json_object_set_new(m, "dane", dane_json(c, i));
		json_array_append_new(mxs, m);
	}
	json_object_set_new(root, "mx", mxs);
	json_object_set_new(root, "mx_status",
			    json_string(c->mx ? dns_status_name(c->mx->status) : "failed"));
	json_object_set_new(root, "decision", json_string(decision_name(v)));
	json_object_set_new(root, "result", json_string(why));
	s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (s == NULL)
		return EX_SOFTWARE;
	printf("%s\n", s);
	free(s);
	return 0;
}

static void print_check_text(const struct check *c, const char *why)
{
	const struct sts_verdict *v = c->v;
	char t1[32], t2[32];
	size_t i;

	printf("domain:    %s\n", v->domain);
	if (v->txt_dns == STS_DNS_OK && v->txt_result == STS_TXT_FOUND)
		printf("txt:       _mta-sts.%s \"%s\" (id %s)\n", v->domain, v->txt_record,
		       v->txt_id);
	else
		printf("txt:       _mta-sts.%s: no usable record (%s%s%s)\n", v->domain,
		       txt_status(v), v->txt_detail[0] ? ": " : "", v->txt_detail);
	if (has_policy(v)) {
		printf("policy:    id %s, mode %s, max_age %u, from %s\n", v->id,
		       sts_policy_mode_name(v->policy.mode), (unsigned)v->policy.max_age,
		       sts_source_name(v->source));
		printf("           fetched %s, expires %s\n",
		       rfc3339(v->fetched_at, t1, sizeof(t1)),
		       rfc3339(v->expires_at, t2, sizeof(t2)));
		for (i = 0; i < v->policy.mx_count; i++)
			printf("           mx: %s\n", sts_policy_mx(&v->policy, i));
	} else {
		printf("policy:    none\n");
	}
	if (v->error_type != SMTP_TLS_RESULT_SUCCESS)
		printf("error:     %s: %s\n", smtp_tls_result_name(v->error_type), v->error_detail);
	if (c->mx == NULL || c->mx->nhosts == 0)
		printf("mx:        none (%s)\n",
		       c->mx ? dns_status_name(c->mx->status) : "lookup failed");
	for (i = 0; c->mx != NULL && i < c->mx->nhosts; i++) {
		const struct dns_mx_host *h = &c->mx->hosts[i];
		bool match = has_policy(v) && sts_mx_match(&v->policy, h->name, NULL);
		const char *what;

		if (!has_policy(v) || v->decision == STS_DECISION_NONE)
			what = "no policy to match";
		else if (match)
			what = "matches the policy";
		else if (v->decision == STS_DECISION_ENFORCE)
			what = "does NOT match the policy: not used";
		else
			what = "does NOT match the policy (testing: reported, still used)";
		printf("%s %3u %s%s: %s\n", i == 0 ? "mx:       " : "          ", h->preference,
		       h->name, c->mx->implicit ? " (implicit MX)" : "", what);
		if (c->danes != NULL)
			print_dane_text(c, i);
	}
	if (c->probes != NULL && c->mx != NULL && c->mx->nhosts > 0) {
		printf("probe:     port %u, STARTTLS and certificate check per MX host\n",
		       (unsigned)c->smtp_port);
		for (i = 0; i < c->mx->nhosts; i++) {
			const struct dns_mx_host *h = &c->mx->hosts[i];
			const char *match;

			if (!has_policy(v) || v->decision == STS_DECISION_NONE)
				match = "no policy";
			else if (sts_mx_match(&v->policy, h->name, NULL))
				match = "yes";
			else if (v->decision == STS_DECISION_ENFORCE)
				match = "no (not used under enforce)";
			else
				match = "no";
			print_probe_text(h, &c->probes[i], match);
		}
	}
	printf("decision:  %s\n", decision_name(v));
	printf("result:    %s\n", why);
}

static int cmd_check(const struct sopts *o)
{
	struct config cfg;
	struct check c = { 0 };
	struct dns *dns = NULL;
	struct sts_engine *eng = NULL;
	struct sts_resolver res;
	struct sts_engine_config ec;
	struct dns_options dopts;
	struct tls_policy *tp = NULL;
	enum tls_level level;
	char dir[CONFIG_PATH_MAX + 8], norm[STS_DOMAIN_MAX + 1];
	uv_loop_t loop;
	int rc = EX_SOFTWARE;

	if (!sts_domain_normalize(o->domain, strlen(o->domain), norm, sizeof(norm))) {
		fprintf(stderr, "stsrelay: sts check: '%s' is not a valid domain name\n",
			o->domain);
		return EX_DATAERR;
	}
	rc = cli_load_config("stsrelay", o->config, &cfg);
	if (rc != 0)
		return rc;
	log_setup("stsrelay", cfg.log_format == CONFIG_LOG_JSON ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT,
		  0);
	if (cache_dir(&cfg, dir, sizeof(dir)) != 0)
		return EX_CONFIG;
	if (uv_loop_init(&loop) != 0)
		return EX_OSERR;
	rc = EX_SOFTWARE;
	if (cfg.tls_policy_file[0] != '\0') {
		char perr[1200];

		if (tls_policy_load(cfg.tls_policy_file, &tp, perr, sizeof(perr)) != 0) {
			fprintf(stderr, "stsrelay: sts check: tls_policy_file %s\n", perr);
			rc = EX_CONFIG;
			goto out;
		}
	}
	if (!tls_policy_lookup(tp, norm, &level))
		level = TLS_LEVEL_MAY;
	c.dane_required = level == TLS_LEVEL_DANE;
	c.dane_on = c.dane_required || (cfg.dane && level != TLS_LEVEL_STS_ONLY);
	memset(&dopts, 0, sizeof(dopts));
	dopts.dnssec = true;
	if (dns_new(&loop, cfg.dns_servers, cfg.ndns_servers, &dopts, &dns) != 0) {
		fprintf(stderr, "stsrelay: sts check: cannot start the resolver\n");
		rc = EX_OSERR;
		goto out;
	}
	sts_dns_resolver(dns, &res);
	memset(&ec, 0, sizeof(ec));
	ec.cache_dir = dir;
	ec.persist = o->update_cache;
	ec.load = true;
	ec.refresh = false;
	ec.ca_file = cfg.ca_file;
	ec.https_port = cfg.sts_https_port;
	ec.fetch_timeout_ms = cfg.sts_fetch_timeout_ms;
	if (sts_engine_new(&loop, &ec, &res, &eng) != 0) {
		fprintf(stderr, "stsrelay: sts check: cannot start the MTA-STS engine\n");
		goto out;
	}
	if (sts_engine_lookup(eng, norm, on_verdict, &c, NULL) != 0) {
		fprintf(stderr, "stsrelay: sts check: cannot start the lookup\n");
		goto out;
	}
	if (dns_resolve_mx(dns, norm, on_mx, &c, NULL) != 0)
		c.mx_done = true;
	/* Every step is bounded (DNS timeouts, sts_fetch_timeout): the loop
	 * ends when both answers are in. */
	while (!(c.v_done && c.mx_done))
		if (uv_run(&loop, UV_RUN_ONCE) == 0 && !(c.v_done && c.mx_done))
			break;
	if (c.v == NULL || c.v->cancelled) {
		fprintf(stderr, "stsrelay: sts check: the lookup did not finish\n");
		goto out;
	}
	c.smtp_port = cfg.smtp_port;
	if (run_dane(&c, dns, cfg.smtp_port, &loop) != 0) {
		fprintf(stderr, "stsrelay: sts check: the TLSA lookups did not finish\n");
		goto out;
	}
	if (o->probe && run_probes(&c, &cfg, &loop) != 0) {
		fprintf(stderr, "stsrelay: sts check: the MX probe could not run\n");
		goto out;
	}
	{
		char why[512];
		int result = check_result(&c, why, sizeof(why));

		if (o->json) {
			rc = print_check_json(&c, why);
		} else {
			print_check_text(&c, why);
			rc = 0;
		}
		if (rc == 0)
			rc = result;
	}
out:
	sts_verdict_free(c.v);
	free(c.probes);
	free(c.danes);
	tls_policy_free(tp);
	if (c.mx != NULL)
		dns_mx_result_free(c.mx);
	sts_engine_free(eng);
	dns_free(dns);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		fprintf(stderr, "stsrelay: sts check: loop not closed cleanly\n");
	fflush(stdout);
	return rc;
}

/* ---- sts cache ---- */

static int cmd_cache(const struct sopts *o)
{
	struct config cfg;
	struct sts_cache *cache = NULL;
	struct sts_cache_entry **list = NULL;
	struct sts_policy *pol = NULL;
	size_t n = 0, i, nload = 0, nbad = 0;
	char dir[CONFIG_PATH_MAX + 8], t1[32], t2[32];
	int64_t now = clock_now();
	json_t *root = NULL, *arr = NULL;
	int rc;

	rc = cli_load_config("stsrelay", o->config, &cfg);
	if (rc != 0)
		return rc;
	if (cache_dir(&cfg, dir, sizeof(dir)) != 0)
		return EX_CONFIG;
	rc = EX_SOFTWARE;
	pol = malloc(sizeof(*pol));
	if (pol == NULL || sts_cache_new(dir, false, &cache) != 0)
		goto out;
	if (sts_cache_load(cache, &nload, &nbad) != 0) {
		fprintf(stderr, "stsrelay: sts cache: cannot read %s\n", dir);
		rc = EX_IOERR;
		goto out;
	}
	if (sts_cache_list(cache, &list, &n) != 0)
		goto out;
	if (o->json) {
		root = json_object();
		arr = json_array();
		if (root == NULL || arr == NULL)
			goto out;
		json_object_set_new(root, "policies", arr);
	} else if (n == 0) {
		printf("no cached MTA-STS policies in %s\n", dir);
	} else {
		printf("%-32s %-20s %-8s %-21s %-21s %s\n", "DOMAIN", "ID", "MODE", "FETCHED",
		       "EXPIRES", "MX");
	}
	for (i = 0; i < n; i++) {
		const struct sts_cache_entry *e = list[i];
		bool expired = now >= e->expires_at;
		size_t k;

		if (sts_policy_parse(e->text, e->text_len, pol, NULL) != 0)
			continue; /* cannot happen: checked at load */
		rfc3339(e->fetched_at, t1, sizeof(t1));
		rfc3339(e->expires_at, t2, sizeof(t2));
		if (o->json) {
			json_array_append_new(arr,
					      json_pack("{s:s, s:s, s:s, s:o, s:I, s:s, s:s, s:b}",
							"domain", e->domain, "id", e->id, "mode",
							sts_policy_mode_name(pol->mode), "mx",
							mx_patterns(pol), "max_age",
							(json_int_t)pol->max_age, "fetched_at", t1,
							"expires_at", t2, "expired", expired));
			continue;
		}
		printf("%-32s %-20s %-8s %-21s %-21s", e->domain, e->id,
		       sts_policy_mode_name(pol->mode), t1, t2);
		for (k = 0; k < pol->mx_count; k++)
			printf("%s%s", k ? "," : "", sts_policy_mx(pol, k));
		printf("%s\n", expired ? " (expired)" : "");
	}
	if (o->json) {
		char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

		if (s == NULL)
			goto out;
		printf("%s\n", s);
		free(s);
	}
	if (nbad > 0)
		fprintf(stderr, "stsrelay: sts cache: %zu unreadable cache file(s) ignored\n",
			nbad);
	rc = 0;
out:
	json_decref(root);
	free(list);
	free(pol);
	sts_cache_free(cache);
	return rc;
}

int cmd_sts(int argc, char **argv)
{
	struct sopts o;
	bool check;

	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		sts_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? EX_USAGE : 0;
	}
	for (int i = 2; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			sts_usage(stdout);
			return 0;
		}
	}
	check = strcmp(argv[1], "check") == 0;
	if (!check && strcmp(argv[1], "cache") != 0) {
		fprintf(stderr, "stsrelay: sts: unknown command '%s'\n", argv[1]);
		sts_usage(stderr);
		return EX_USAGE;
	}
	if (parse_opts(argc, argv, &o, check) != 0) {
		sts_usage(stderr);
		return EX_USAGE;
	}
	return check ? cmd_check(&o) : cmd_cache(&o);
}
