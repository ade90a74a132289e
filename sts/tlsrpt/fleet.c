/* The fleet's TLS-RPT: a merger that adds each node's new session lines to
 * Redis exactly once (cursor checked in a script), the day read back, the ledger. */
#define LOG_COMPONENT LOG_C_TLSRPT /* program name in logs, see relay/core/log.h */
#include "sts/tlsrpt/fleet.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relay/core/clock.h"
#include "relay/core/log.h"

#define NSLOTS 4             /* days the merger keeps state for */
#define BATCH_MAX (1u << 20) /* session bytes per merge step */
#define MERGE_EVERY_MS 2000  /* background merge interval */
#define MAX_TEXTS 16         /* policy texts pushed per step */
/* A claimed copy is that node's for 10 minutes: sending one takes a queue
 * commit or an HTTPS POST (60 s at most); a node that dies meanwhile leaves
 * it to the others after that. */
#define CLAIM_TTL_MS 600000
#define KEY_MAX 2400   /* key names (a rua may be long) */
#define DOMAIN_BUF 300 /* a group's policy domain with its NUL (DNS: 253 at most) */
#define PATH_MAX_LEN (CONFIG_PATH_MAX + 64)
#define PREFIX "stsrelay:tlsrpt:" /* then DAY: */
#define SEEN_KEY PREFIX "seen"    /* hash: node -> when its daemon last merged */

/* ---- scripts ---- */

/* KEYS: cursor, nodes, merged, domains, then one count hash per domain.
 * ARGV: node, expected cursor ("" none), new cursor, ttl, final, ndomains,
 * the domain names, then (hash index, group key, delta) triples. Applies
 * everything, or nothing when the cursor moved: {1, new} / {0, current}. */
static const char merge_lua[] =
	"local cur = redis.call('GET', KEYS[1]) or ''\n"
	"if cur ~= ARGV[2] then return {0, cur} end\n"
	"local ttl = tonumber(ARGV[4])\n"
	"local nd = tonumber(ARGV[6])\n"
	"for i = 1, nd do redis.call('SADD', KEYS[4], ARGV[6 + i]) end\n"
	"local i = 7 + nd\n"
	"while i + 2 <= #ARGV do\n"
	"  redis.call('HINCRBY', KEYS[4 + tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])\n"
	"  i = i + 3\n"
	"end\n"
	"redis.call('SET', KEYS[1], ARGV[3], 'EX', ttl)\n"
	"redis.call('SADD', KEYS[2], ARGV[1])\n"
	"if ARGV[5] == '1' then redis.call('SADD', KEYS[3], ARGV[1]) end\n"
	"for j = 2, #KEYS do redis.call('EXPIRE', KEYS[j], ttl) end\n"
	"return {1, ARGV[3]}\n";

/* KEYS: nodes, merged, seen. ARGV: the day's start. The nodes a report of
 * the day waits for: those that merged some of it, and every daemon seen
 * since it began (one that could not reach Redis all day has counts too),
 * less those that merged all of it. */
static const char check_lua[] =
	"local want, out = {}, {}\n"
	"for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do want[n] = true end\n"
	"local seen = redis.call('HGETALL', KEYS[3])\n"
	"for i = 1, #seen, 2 do\n"
	"  if tonumber(seen[i + 1]) >= tonumber(ARGV[1]) then want[seen[i]] = true end\n"
	"end\n"
	"for n, _ in pairs(want) do\n"
	"  if redis.call('SISMEMBER', KEYS[2], n) == 0 then table.insert(out, n) end\n"
	"end\n"
	"table.sort(out)\n"
	"return out\n";

/* KEYS: sent, claim. ARGV: member, node, ttl ms. */
static const char claim_lua[] =
	"if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 'sent' end\n"
	"if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 'mine' end\n"
	"if redis.call('GET', KEYS[2]) == ARGV[2] then\n"
	"  redis.call('PEXPIRE', KEYS[2], ARGV[3]) return 'mine'\n"
	"end\n"
	"return 'busy'\n";

/* KEYS: sent, claim. ARGV: member, node, sent (1/0), ttl s. */
static const char release_lua[] =
	"if ARGV[3] == '1' then\n"
	"  redis.call('SADD', KEYS[1], ARGV[1]) redis.call('EXPIRE', KEYS[1], ARGV[4])\n"
	"end\n"
	"if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end\n"
	"return 1\n";

/* ---- state ---- */

struct mday {
	char day[TLSRPT_DAY_LEN + 1]; /* "" = free slot */
	int64_t start;
	bool known;         /* cursor read from Redis since the connection came up */
	char cursor[64];    /* its raw value ("" = none) */
	uint64_t ino, off;  /* parsed */
	bool final_done;    /* this node is in the day's merged set */
	uint64_t sent_sync; /* bytes of the local sent ledger pushed */
	char pushed[MAX_TEXTS][TLSRPT_POLICY_HASH_LEN + 1];
	size_t npushed, pushed_next;
};

/* One merge step's work in the thread pool: inputs, then outputs. */
struct mjob {
	struct tlsrpt_fleet *f;
	struct mday *md;
	char spool[CONFIG_PATH_MAX];
	char dir[PATH_MAX_LEN];
	char day[TLSRPT_DAY_LEN + 1];
	uint64_t exp_ino, exp_off, sent_from;
	char skip[MAX_TEXTS][TLSRPT_POLICY_HASH_LEN + 1]; /* texts pushed already */
	size_t nskip;
	/* outputs */
	char err[160];
	uint64_t ino, size, from, to;
	struct tlsrpt_day *groups; /* the lines [from, to) */
	size_t ntexts;
	char hash[MAX_TEXTS][TLSRPT_POLICY_HASH_LEN + 1];
	char *text[MAX_TEXTS];
	size_t text_len[MAX_TEXTS];
	char *sent; /* complete lines of the local sent ledger from sent_from */
	size_t sent_len;
	bool final;
};

enum pphase { P_MERGE, P_CHECK, P_DOMAINS, P_COUNTS, P_TEXTS };

struct tlsrpt_fleet_prep {
	struct tlsrpt_fleet *f;
	char day[TLSRPT_DAY_LEN + 1];
	bool wait;
	tlsrpt_fleet_prep_cb cb;
	void *arg;
	enum pphase phase;
	struct mday *md;
	struct redis_cmd **cmds; /* outstanding commands */
	size_t ncmds, nreplies;
	char **domains;
	size_t ndomains;
	char **keys;
	uint64_t *counts;
	size_t nkeys, capkeys;
	struct tlsrpt_day *d;
	char why[512];
	struct tlsrpt_fleet_prep *next, **prevp;
};

struct claim {
	struct tlsrpt_fleet *f;
	tlsrpt_claim_cb cb;
	void *arg;
	bool cancelled;
};

struct tlsrpt_fleet {
	uv_loop_t *loop;
	struct redis *redis;
	char spool[CONFIG_PATH_MAX];
	char node[64];
	uint64_t ttl_s;
	bool background;
	struct mday days[NSLOTS];
	uv_timer_t tick; /* background merge; also delivers DOWN to waiting prepares */
	bool tick_open;
	unsigned round;        /* background: slots still to merge this round */
	struct mday *cur;      /* the slot a step works on (NULL: none) */
	struct mjob *job;      /* the step's job, owned here after the worker */
	uv_work_t work;        /* the step's thread-pool part */
	bool work_busy;        /* ... running */
	struct redis_cmd *cmd; /* the step's command (cursor or merge) */
	struct tlsrpt_ledger ledger;
	struct tlsrpt_fleet_prep *preps;
	unsigned claims; /* claims waiting for a reply */
	bool closing;
};

static void pump(struct tlsrpt_fleet *f);

static void day_key(char *out, size_t len, const char *day, const char *what, const char *sub)
{
	snprintf(out, len, PREFIX "%s:%s%s%s", day, what, sub ? ":" : "", sub ? sub : "");
}

static struct mday *slot_for(struct tlsrpt_fleet *f, const char *day)
{
	struct mday *oldest = &f->days[0];
	int64_t start;
	size_t i;

	if (tlsrpt_day_parse(day, &start) != 0)
		return NULL;
	for (i = 0; i < NSLOTS; i++) {
		if (strcmp(f->days[i].day, day) == 0)
			return &f->days[i];
		if (f->days[i].day[0] == '\0' || f->days[i].start < oldest->start)
			oldest = &f->days[i];
	}
	if (oldest == f->cur)
		return NULL; /* never reuse the slot a step works on */
	memset(oldest, 0, sizeof(*oldest));
	memcpy(oldest->day, day, sizeof(oldest->day));
	oldest->start = start;
	return oldest;
}

static void maybe_free(struct tlsrpt_fleet *f)
{
	if (f->closing && !f->tick_open && !f->work_busy && f->claims == 0)
		free(f);
}

/* ---- prepares: results ---- */

static void prep_free(struct tlsrpt_fleet_prep *p)
{
	size_t i;

	*p->prevp = p->next;
	if (p->next != NULL)
		p->next->prevp = p->prevp;
	for (i = 0; i < p->ncmds; i++)
		redis_cancel(p->cmds[i]);
	free(p->cmds);
	for (i = 0; i < p->ndomains; i++)
		free(p->domains[i]);
	free(p->domains);
	for (i = 0; i < p->nkeys; i++)
		free(p->keys[i]);
	free(p->keys);
	free(p->counts);
	tlsrpt_day_free(p->d);
	free(p);
}

static void prep_done(struct tlsrpt_fleet_prep *p, enum tlsrpt_fleet_status st, const char *why)
{
	tlsrpt_fleet_prep_cb cb = p->cb;
	void *arg = p->arg;
	struct tlsrpt_day *d = st == TLSRPT_FLEET_READY ? p->d : NULL;
	char reason[512];

	if (d != NULL)
		p->d = NULL;
	snprintf(reason, sizeof(reason), "%s", why != NULL ? why : "");
	prep_free(p);
	cb(arg, st, d, reason);
}

/* ---- the merge step ---- */

static int parse_cursor(const char *s, uint64_t *ino, uint64_t *off)
{
	char *end;

	*ino = *off = 0;
	if (*s == '\0')
		return 0;
	errno = 0;
	*ino = strtoull(s, &end, 10);
	if (errno != 0 || *end != ':')
		return -1;
	*off = strtoull(end + 1, &end, 10);
	return errno == 0 && *end == '\0' ? 0 : -1;
}

static void set_cursor(struct mday *md, const char *raw, size_t len)
{
	snprintf(md->cursor, sizeof(md->cursor), "%.*s", (int)len, raw);
	if (parse_cursor(md->cursor, &md->ino, &md->off) != 0) {
		log_warn("tlsrpt %s: the fleet's cursor \"%s\" is damaged; merging this node's "
			 "day again from its start",
			 md->day, md->cursor);
		md->ino = md->off = 0;
	}
	md->known = true;
}

static bool day_over(const struct mday *md)
{
	return clock_now() >= md->start + 86400;
}

/* Reads the whole of path[from..] up to max bytes, ending at the last
 * newline, into *out (malloc'd). 0, or -1 with errno. */
static int read_lines(const char *path, uint64_t from, size_t max, char **out, size_t *len,
		      uint64_t *size)
{
	struct stat sb;
	size_t want, have = 0;
	char *buf;
	int fd;

	*out = NULL;
	*len = 0;
	*size = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	if (fstat(fd, &sb) != 0) {
		close(fd);
		return -1;
	}
	*size = (uint64_t)sb.st_size;
	if (*size <= from) {
		close(fd);
		return 0;
	}
	want = *size - from > max ? max : (size_t)(*size - from);
	buf = malloc(want + 1);
	if (buf == NULL) {
		close(fd);
		return -1;
	}
	while (have < want) {
		ssize_t n = pread(fd, buf + have, want - have, (off_t)(from + have));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	close(fd);
	while (have > 0 && buf[have - 1] != '\n')
		have--;
	buf[have] = '\0';
	*out = buf;
	*len = have;
	return 0;
}

/* Thread pool: what is new in this node's files of the day. */
static void step_work(uv_work_t *req)
{
	/* f->job is set before the work is queued and left alone until it
	 * is done; nothing else of f is touched here */
	struct mjob *j = ((struct tlsrpt_fleet *)req->data)->job;
	char path[PATH_MAX_LEN + 32], *buf = NULL;
	struct stat sb;
	size_t len = 0, i, k;
	uint64_t size;

	snprintf(path, sizeof(path), "%s/sessions", j->dir);
	if (stat(path, &sb) != 0) {
		if (errno != ENOENT)
			snprintf(j->err, sizeof(j->err), "%s: %s", path, strerror(errno));
		/* no sessions that day: ino 0, nothing to merge, and (once the day
		 * is over) nothing the fleet's report waits for from this node */
		j->final = errno == ENOENT;
		return;
	}
	j->ino = (uint64_t)sb.st_ino;
	/* another file than the cursor names (a new spool): all of it is new */
	j->from = j->ino == j->exp_ino ? j->exp_off : 0;
	if (read_lines(path, j->from, BATCH_MAX, &buf, &len, &size) != 0) {
		snprintf(j->err, sizeof(j->err), "%s: %s", path, strerror(errno));
		return;
	}
	j->size = size;
	if (size < j->from) {
		snprintf(j->err, sizeof(j->err),
			 "%s is shorter (%" PRIu64 " bytes) than the fleet merged of it (%" PRIu64
			 "); not merging it",
			 path, size, j->from);
		free(buf);
		return;
	}
	j->to = j->from + len;
	if (len > 0 && tlsrpt_day_load_buf(j->day, buf, len, &j->groups) != 0) {
		snprintf(j->err, sizeof(j->err), "out of memory");
		j->to = j->from;
	}
	free(buf);
	j->final = j->to == size;
	/* the policy texts the new groups name, unless pushed already */
	for (i = 0; j->groups != NULL && i < tlsrpt_day_ngroups(j->groups); i++) {
		char h[TLSRPT_POLICY_HASH_LEN + 1];
		bool seen = false;
		char *t;
		size_t tl = 0;

		if (tlsrpt_group_policy_hash(tlsrpt_day_group(j->groups, i, NULL), h) != 0)
			continue;
		for (k = 0; k < j->nskip && !seen; k++)
			seen = strcmp(j->skip[k], h) == 0;
		for (k = 0; k < j->ntexts && !seen; k++)
			seen = strcmp(j->hash[k], h) == 0;
		if (seen || j->ntexts == MAX_TEXTS)
			continue;
		t = tlsrpt_policy_text_read(j->spool, j->day, h, &tl);
		if (t == NULL)
			continue;
		memcpy(j->hash[j->ntexts], h, sizeof(h));
		j->text[j->ntexts] = t;
		j->text_len[j->ntexts] = tl;
		j->ntexts++;
	}
	/* this node's sent ledger: copies the fleet must know were sent */
	snprintf(path, sizeof(path), "%s/sent", j->dir);
	if (read_lines(path, j->sent_from, BATCH_MAX, &j->sent, &j->sent_len, &size) != 0) {
		free(j->sent);
		j->sent = NULL;
		j->sent_len = 0;
	}
}

static void mjob_free(struct mjob *j)
{
	size_t i;

	if (j == NULL)
		return;
	tlsrpt_day_free(j->groups);
	for (i = 0; i < j->ntexts; i++)
		free(j->text[i]);
	free(j->sent);
	free(j);
}

/* The first prepare of slot md (any slot: NULL) in phase ph. Callers look
 * again from the head after each one they handle: its callback may have
 * added or removed others. */
static struct tlsrpt_fleet_prep *find_prep(struct tlsrpt_fleet *f, enum pphase ph,
					   const struct mday *md)
{
	struct tlsrpt_fleet_prep *p;

	for (p = f->preps; p != NULL; p = p->next)
		if (p->phase == ph && (md == NULL || p->md == md))
			return p;
	return NULL;
}

static void prep_advance(struct tlsrpt_fleet_prep *p);

/* The step ended: ok false when Redis failed it; done when this node's
 * file of the day is merged as far as it goes (and marked final when the
 * day is over). */
static void step_end(struct tlsrpt_fleet *f, bool ok, bool done)
{
	struct mday *md = f->cur;
	struct tlsrpt_fleet_prep *p;
	size_t i;

	f->cur = NULL;
	f->cmd = NULL;
	mjob_free(f->job);
	f->job = NULL;
	if (md != NULL && (done || !ok)) {
		for (i = 0; i < NSLOTS; i++)
			if (&f->days[i] == md)
				f->round &= ~(1u << i);
		while ((p = find_prep(f, P_MERGE, md)) != NULL) {
			if (!ok) {
				prep_done(p, TLSRPT_FLEET_DOWN,
					  "Redis failed while merging this node's counts");
				continue;
			}
			p->phase = P_CHECK;
			prep_advance(p); /* leaves P_CHECK, or ends p */
		}
	}
	pump(f);
}

static void on_merged(void *arg, const redisReply *rp)
{
	struct tlsrpt_fleet *f = arg;
	struct mday *md = f->cur;
	struct mjob *j = f->job;
	long long applied;
	size_t i;

	f->cmd = NULL;
	if (rp == NULL || rp->type != REDIS_REPLY_ARRAY || rp->elements != 2 ||
	    redis_reply_int(rp->element[0], &applied) != 0 ||
	    rp->element[1]->type != REDIS_REPLY_STRING) {
		if (rp != NULL && rp->type == REDIS_REPLY_ERROR)
			log_error("tlsrpt %s: the fleet's merge script failed: %s", md->day,
				  rp->str);
		md->known = false; /* the cursor may have moved: read it again */
		step_end(f, false, false);
		return;
	}
	set_cursor(md, rp->element[1]->str, rp->element[1]->len);
	if (applied != 1) {
		/* someone else's cursor: this node again (a reply lost before), or
		 * a Redis that lost data; start over from what Redis has */
		log_info("tlsrpt %s: the fleet has this node's counts up to \"%s\"; merging "
			 "from there",
			 md->day, md->cursor);
		step_end(f, true, false);
		return;
	}
	if (j->final && day_over(md))
		md->final_done = true;
	for (i = 0; i < j->ntexts; i++) {
		memcpy(md->pushed[md->pushed_next], j->hash[i], TLSRPT_POLICY_HASH_LEN + 1);
		md->pushed_next = (md->pushed_next + 1) % MAX_TEXTS;
		if (md->npushed < MAX_TEXTS)
			md->npushed++;
	}
	if (j->to > j->from)
		log_debug("tlsrpt %s: merged bytes %" PRIu64 "..%" PRIu64
			  " of this node's sessions",
			  md->day, j->from, j->to);
	step_end(f, true, j->to >= j->size);
}

/* The step's Redis part: policy texts, the sent ledger, then the merge. */
static void step_send(struct tlsrpt_fleet *f)
{
	struct mday *md = f->cur;
	struct mjob *j = f->job;
	char kcur[KEY_MAX], knodes[KEY_MAX], kmerged[KEY_MAX], kdom[KEY_MAX], ttl[24], newc[64];
	const char **argv = NULL;
	size_t argc = 0, nkeys, ndom = 0, ng, i, k, cap, *gdom = NULL;
	char(*doms)[DOMAIN_BUF] = NULL, (*hkeys)[KEY_MAX] = NULL, (*nums)[24] = NULL;
	bool final = j->final && day_over(md);
	bool ok = false;

	snprintf(ttl, sizeof(ttl), "%" PRIu64, f->ttl_s);
	/* texts first: the script that names them comes after on this connection */
	for (i = 0; i < j->ntexts; i++) {
		char kt[KEY_MAX];
		const char *a[6] = { "SET", kt, j->text[i], "NX", "EX", ttl };
		size_t l[6];

		day_key(kt, sizeof(kt), md->day, "policy", j->hash[i]);
		for (k = 0; k < 6; k++)
			l[k] = strlen(a[k]);
		l[2] = j->text_len[i];
		if (redis_command(f->redis, NULL, NULL, NULL, 6, a, l) != 0)
			goto out;
	}
	if (j->sent != NULL && j->sent_len > 0) {
		char ks[KEY_MAX];
		char *p = j->sent, *e = j->sent + j->sent_len;
		const char *a[2] = { "SADD", ks };

		day_key(ks, sizeof(ks), md->day, "sent", NULL);
		while (p < e) {
			char *nl = memchr(p, '\n', (size_t)(e - p));
			size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(e - p);
			const char *aa[3] = { a[0], a[1], p };
			size_t ll[3] = { 4, strlen(ks), n };

			if (n > 0 && memchr(p, '\t', n) != NULL &&
			    redis_command(f->redis, NULL, NULL, NULL, 3, aa, ll) != 0)
				goto out;
			p += n + 1;
		}
		md->sent_sync = j->sent_from + j->sent_len;
	}
	if (j->to == j->from && (!final || md->final_done)) {
		step_end(f, true, true);
		return;
	}
	ng = j->groups != NULL ? tlsrpt_day_ngroups(j->groups) : 0;
	/* EVAL, script, nkeys, 4 + ndom keys, 6 fixed args, ndom names, 3 per
	 * group; ndom <= ng */
	cap = 13 + 2 * ng + 3 * ng;
	argv = calloc(cap, sizeof(*argv));
	doms = calloc(ng + 1, sizeof(*doms));
	hkeys = calloc(ng + 1, sizeof(*hkeys));
	nums = calloc(2 * ng + 2, sizeof(*nums)); /* nkeys, ndom, 2 per group */
	gdom = calloc(ng + 1, sizeof(*gdom));     /* each group's domain: index into doms */
	if (argv == NULL || doms == NULL || hkeys == NULL || nums == NULL || gdom == NULL)
		goto out;
	/* the domains of the step, each once, with their hash keys */
	for (i = 0; i < ng; i++) {
		char d[DOMAIN_BUF];

		gdom[i] = SIZE_MAX;
		if (tlsrpt_group_domain(tlsrpt_day_group(j->groups, i, NULL), d, sizeof(d)) != 0)
			continue;
		for (k = 0; k < ndom && strcmp(doms[k], d) != 0; k++)
			;
		gdom[i] = k;
		if (k < ndom)
			continue;
		memcpy(doms[ndom], d, sizeof(d));
		day_key(hkeys[ndom], KEY_MAX, md->day, "counts", d);
		ndom++;
	}
	day_key(kcur, sizeof(kcur), md->day, "cursor", f->node);
	day_key(knodes, sizeof(knodes), md->day, "nodes", NULL);
	day_key(kmerged, sizeof(kmerged), md->day, "merged", NULL);
	day_key(kdom, sizeof(kdom), md->day, "domains", NULL);
	snprintf(newc, sizeof(newc), "%" PRIu64 ":%" PRIu64, j->ino, j->to);
	nkeys = 4 + ndom;
	argv[argc++] = "EVAL";
	argv[argc++] = merge_lua;
	snprintf(nums[0], sizeof(nums[0]), "%zu", nkeys);
	argv[argc++] = nums[0];
	argv[argc++] = kcur;
	argv[argc++] = knodes;
	argv[argc++] = kmerged;
	argv[argc++] = kdom;
	for (i = 0; i < ndom; i++)
		argv[argc++] = hkeys[i];
	argv[argc++] = f->node;
	argv[argc++] = md->cursor;
	argv[argc++] = newc;
	argv[argc++] = ttl;
	argv[argc++] = final ? "1" : "0";
	snprintf(nums[1], sizeof(nums[1]), "%zu", ndom);
	argv[argc++] = nums[1];
	for (i = 0; i < ndom; i++)
		argv[argc++] = doms[i];
	for (i = 0; i < ng; i++) {
		uint64_t count;
		const char *g = tlsrpt_day_group(j->groups, i, &count);

		if (gdom[i] == SIZE_MAX)
			continue;
		snprintf(nums[2 + 2 * i], sizeof(nums[0]), "%zu", gdom[i] + 1);
		snprintf(nums[3 + 2 * i], sizeof(nums[0]), "%" PRIu64, count);
		argv[argc++] = nums[2 + 2 * i];
		argv[argc++] = g;
		argv[argc++] = nums[3 + 2 * i];
	}
	j->final = final;
	ok = redis_command(f->redis, on_merged, f, &f->cmd, (int)argc, argv, NULL) == 0;
out:
	free(argv);
	free(doms);
	free(hkeys);
	free(nums);
	free(gdom);
	if (!ok) {
		md->known = false;
		step_end(f, false, false);
	}
}

static void step_done_work(uv_work_t *req, int status)
{
	struct tlsrpt_fleet *f = req->data;
	struct mjob *j = f->job;

	f->work_busy = false;
	if (f->closing) {
		mjob_free(j);
		f->job = NULL;
		maybe_free(f);
		return;
	}
	if (status != 0 || j->err[0] != '\0') {
		if (j->err[0] != '\0')
			log_warn("tlsrpt %s: cannot merge this node's sessions: %s", j->day,
				 j->err);
		step_end(f, status == 0, status == 0); /* a local problem: nothing to wait for */
		return;
	}
	if (!redis_up(f->redis)) {
		step_end(f, false, false);
		return;
	}
	step_send(f);
}

static void step_start_work(struct tlsrpt_fleet *f)
{
	struct mday *md = f->cur;
	struct mjob *j = calloc(1, sizeof(*j));

	if (j == NULL) {
		step_end(f, false, false);
		return;
	}
	j->f = f;
	j->md = md;
	snprintf(j->spool, sizeof(j->spool), "%s", f->spool);
	snprintf(j->dir, sizeof(j->dir), "%s/tlsrpt/%s", f->spool, md->day);
	memcpy(j->day, md->day, sizeof(j->day));
	j->exp_ino = md->ino;
	j->exp_off = md->off;
	j->sent_from = md->sent_sync;
	memcpy(j->skip, md->pushed, sizeof(j->skip));
	j->nskip = md->npushed;
	f->job = j;
	f->work.data = f;
	if (uv_queue_work(f->loop, &f->work, step_work, step_done_work) != 0) {
		step_end(f, false, false);
		return;
	}
	f->work_busy = true;
}

static void on_cursor(void *arg, const redisReply *rp)
{
	struct tlsrpt_fleet *f = arg;

	f->cmd = NULL;
	if (rp == NULL || (rp->type != REDIS_REPLY_STRING && rp->type != REDIS_REPLY_NIL)) {
		step_end(f, false, false);
		return;
	}
	{
		struct mday *md = f->cur;
		const char *v = rp->type == REDIS_REPLY_NIL ? "" : rp->str;
		size_t len = rp->type == REDIS_REPLY_NIL ? 0 : rp->len;
		uint64_t ino, off;

		if (md->known && (len != strlen(md->cursor) || memcmp(v, md->cursor, len) != 0)) {
			/* moved by someone else (a `tlsrpt` command of this node:
			 * go on from there), or lost (Redis emptied: everything
			 * of the day again, texts and sent ledger included) */
			if (parse_cursor(md->cursor, &ino, &off) == 0 &&
			    (len == 0 || (parse_cursor(v, &ino, &off) == 0 && off < md->off)))
				log_warn("tlsrpt %s: the fleet lost this node's counts (Redis "
					 "emptied?); merging them again",
					 md->day);
			md->final_done = false;
			md->sent_sync = 0;
			md->npushed = md->pushed_next = 0;
		}
		set_cursor(md, v, len);
	}
	step_start_work(f);
}

static void step_begin(struct tlsrpt_fleet *f, struct mday *md)
{
	char k[KEY_MAX];
	const char *argv[2] = { "GET", k };

	/* the cursor is read at every step (one GET): a Redis that lost it
	 * without a reconnect (emptied, a replica promoted) is noticed */
	f->cur = md;
	day_key(k, sizeof(k), md->day, "cursor", f->node);
	if (redis_command(f->redis, on_cursor, f, &f->cmd, 2, argv, NULL) != 0)
		step_end(f, false, false);
}

/* The days the background merges: today and the two before (the report
 * of a day goes out the next day, retried for 24 hours). */
static void start_round(struct tlsrpt_fleet *f)
{
	int64_t today = clock_now() / 86400 * 86400;
	char now[24];
	const char *argv[4] = { "HSET", SEEN_KEY, f->node, now };
	int i;

	/* this daemon is alive: reports of the days it sees wait for it */
	snprintf(now, sizeof(now), "%" PRId64, clock_now());
	if (redis_up(f->redis) && redis_command(f->redis, NULL, NULL, NULL, 4, argv, NULL) != 0)
		log_debug("tlsrpt: cannot tell the fleet this node is alive now");

	for (i = 0; i < 3; i++) {
		char day[TLSRPT_DAY_LEN + 1];
		struct mday *md;

		tlsrpt_day_of(today - (int64_t)i * 86400, day);
		md = slot_for(f, day);
		if (md != NULL)
			f->round |= 1u << (md - f->days);
	}
}

static void on_tick(uv_timer_t *t);

static void pump(struct tlsrpt_fleet *f)
{
	struct tlsrpt_fleet_prep *p;
	size_t i;

	if (f->closing || f->cur != NULL)
		return;
	if (!redis_up(f->redis)) {
		/* prepares waiting for a merge hear it from the tick, on the loop */
		if (f->preps != NULL)
			uv_timer_start(&f->tick, on_tick, 0, f->background ? MERGE_EVERY_MS : 0);
		return;
	}
	for (p = f->preps; p != NULL; p = p->next)
		if (p->phase == P_MERGE) {
			step_begin(f, p->md);
			return;
		}
	for (i = 0; i < NSLOTS; i++)
		if (f->round & (1u << i)) {
			step_begin(f, &f->days[i]);
			return;
		}
}

static void on_tick(uv_timer_t *t)
{
	struct tlsrpt_fleet *f = t->data;
	struct tlsrpt_fleet_prep *p;

	if (!redis_up(f->redis)) {
		while ((p = find_prep(f, P_MERGE, NULL)) != NULL)
			prep_done(p, TLSRPT_FLEET_DOWN, "Redis is not reachable");
		return;
	}
	if (f->background && f->cur == NULL && f->round == 0)
		start_round(f);
	pump(f);
}

/* ---- prepares: checking the other nodes and reading the sums ---- */

/* Sends a command of C strings, keeping its handle among the outstanding
 * ones; -1 on no memory or Redis not up. */
static int prep_send(struct tlsrpt_fleet_prep *p, redis_cb cb, int argc, const char **argv)
{
	struct redis_cmd **nc = realloc(p->cmds, (p->ncmds + 1) * sizeof(*nc));

	if (nc == NULL)
		return -1;
	p->cmds = nc;
	if (redis_command(p->f->redis, cb, p, &p->cmds[p->ncmds], argc, argv, NULL) != 0)
		return -1;
	p->ncmds++;
	return 0;
}

/* A reply came: its handle is spent (they arrive in order). */
static void prep_reply(struct tlsrpt_fleet_prep *p)
{
	p->nreplies++;
	if (p->nreplies == p->ncmds) {
		free(p->cmds);
		p->cmds = NULL;
		p->ncmds = p->nreplies = 0;
	} else {
		p->cmds[p->nreplies - 1] = NULL;
	}
}

static void on_texts(void *arg, const redisReply *rp)
{
	struct tlsrpt_fleet_prep *p = arg;
	char h[TLSRPT_POLICY_HASH_LEN + 1];
	size_t i, k = 0;

	prep_reply(p);
	if (rp == NULL || rp->type != REDIS_REPLY_ARRAY) {
		prep_done(p, TLSRPT_FLEET_DOWN, "Redis failed while reading policy texts");
		return;
	}
	/* the same walk over the groups as the MGET was built with */
	for (i = 0; i < tlsrpt_day_ngroups(p->d) && k < rp->elements; i++) {
		if (tlsrpt_group_policy_hash(tlsrpt_day_group(p->d, i, NULL), h) != 0)
			continue;
		if (rp->element[k]->type == REDIS_REPLY_STRING &&
		    tlsrpt_day_add_policy_text(p->d, h, rp->element[k]->str, rp->element[k]->len) !=
			    0)
			log_debug("tlsrpt %s: policy text %s from the fleet does not match", p->day,
				  h);
		k++;
	}
	prep_done(p, TLSRPT_FLEET_READY, NULL);
}

static void read_texts(struct tlsrpt_fleet_prep *p)
{
	size_t n = tlsrpt_day_ngroups(p->d), i, argc = 0;
	const char **argv = calloc(n + 1, sizeof(*argv));
	char(*keys)[KEY_MAX] = calloc(n + 1, KEY_MAX);
	int rc = -1;

	if (argv == NULL || keys == NULL)
		goto out;
	argv[argc++] = "MGET";
	for (i = 0; i < n; i++) {
		char h[TLSRPT_POLICY_HASH_LEN + 1];

		if (tlsrpt_group_policy_hash(tlsrpt_day_group(p->d, i, NULL), h) != 0)
			continue;
		day_key(keys[argc], KEY_MAX, p->day, "policy", h);
		argv[argc] = keys[argc];
		argc++;
	}
	if (argc == 1) {
		free(argv);
		free(keys);
		prep_done(p, TLSRPT_FLEET_READY, NULL);
		return;
	}
	p->phase = P_TEXTS;
	rc = prep_send(p, on_texts, (int)argc, argv);
out:
	free(argv);
	free(keys);
	if (rc != 0)
		prep_done(p, TLSRPT_FLEET_DOWN, "cannot ask Redis for the policy texts");
}

static void on_counts(void *arg, const redisReply *rp)
{
	struct tlsrpt_fleet_prep *p = arg;
	size_t i;

	/* a failed prepare is freed at once, its commands cancelled: no reply
	 * of it comes here afterwards */
	prep_reply(p);
	if (rp == NULL || rp->type != REDIS_REPLY_ARRAY || rp->elements % 2 != 0) {
		prep_done(p, TLSRPT_FLEET_DOWN, "Redis failed while reading the counts");
		return;
	}
	for (i = 0; i + 1 < rp->elements; i += 2) {
		const redisReply *k = rp->element[i], *v = rp->element[i + 1];
		long long c;

		if (k->type != REDIS_REPLY_STRING || redis_reply_int(v, &c) != 0 || c < 0 ||
		    memchr(k->str, '\0', k->len) != NULL)
			continue;
		if (p->nkeys == p->capkeys) {
			size_t nc = p->capkeys ? p->capkeys * 2 : 64;
			char **nk = realloc(p->keys, nc * sizeof(*nk));
			uint64_t *ncnt;

			if (nk == NULL)
				goto oom;
			p->keys = nk;
			ncnt = realloc(p->counts, nc * sizeof(*ncnt));
			if (ncnt == NULL)
				goto oom;
			p->counts = ncnt;
			p->capkeys = nc;
		}
		p->keys[p->nkeys] = strndup(k->str, k->len);
		if (p->keys[p->nkeys] == NULL)
			goto oom;
		p->counts[p->nkeys++] = (uint64_t)c;
	}
	if (p->ncmds != 0)
		return; /* more domains to come */
	if (tlsrpt_day_from_groups(p->day, (const char *const *)p->keys, p->counts, p->nkeys,
				   &p->d) != 0)
		goto oom;
	if (tlsrpt_day_bad_lines(p->d) > 0)
		log_warn("tlsrpt %s: %zu damaged groups in the fleet's counts skipped", p->day,
			 tlsrpt_day_bad_lines(p->d));
	read_texts(p);
	return;
oom:
	prep_done(p, TLSRPT_FLEET_DOWN, "out of memory");
}

static void on_domains(void *arg, const redisReply *rp)
{
	struct tlsrpt_fleet_prep *p = arg;
	size_t i;

	prep_reply(p);
	if (rp == NULL || rp->type != REDIS_REPLY_ARRAY) {
		prep_done(p, TLSRPT_FLEET_DOWN, "Redis failed while listing the domains");
		return;
	}
	p->domains = calloc(rp->elements + 1, sizeof(*p->domains));
	if (p->domains == NULL) {
		prep_done(p, TLSRPT_FLEET_DOWN, "out of memory");
		return;
	}
	for (i = 0; i < rp->elements; i++)
		if (rp->element[i]->type == REDIS_REPLY_STRING && rp->element[i]->len < 256 &&
		    memchr(rp->element[i]->str, '\0', rp->element[i]->len) == NULL) {
			p->domains[p->ndomains] = strndup(rp->element[i]->str, rp->element[i]->len);
			if (p->domains[p->ndomains] != NULL)
				p->ndomains++;
		}
	if (p->ndomains == 0) {
		if (tlsrpt_day_from_groups(p->day, NULL, NULL, 0, &p->d) != 0) {
			prep_done(p, TLSRPT_FLEET_DOWN, "out of memory");
			return;
		}
		prep_done(p, TLSRPT_FLEET_READY, NULL);
		return;
	}
	p->phase = P_COUNTS;
	for (i = 0; i < p->ndomains; i++) {
		char k[KEY_MAX];
		const char *argv[2] = { "HGETALL", k };

		day_key(k, sizeof(k), p->day, "counts", p->domains[i]);
		if (prep_send(p, on_counts, 2, argv) != 0) {
			prep_done(p, TLSRPT_FLEET_DOWN, "cannot ask Redis for the counts");
			return;
		}
	}
}

static void on_check(void *arg, const redisReply *rp)
{
	struct tlsrpt_fleet_prep *p = arg;
	size_t i, n = 0;

	prep_reply(p);
	if (rp == NULL || rp->type != REDIS_REPLY_ARRAY) {
		if (rp != NULL && rp->type == REDIS_REPLY_ERROR)
			log_error("tlsrpt %s: the fleet's check script failed: %s", p->day,
				  rp->str);
		prep_done(p, TLSRPT_FLEET_DOWN, "Redis failed while checking the other nodes");
		return;
	}
	if (rp->elements > 0) {
		n = (size_t)snprintf(p->why, sizeof(p->why),
				     "waiting for node%s to merge their counts of %s:",
				     rp->elements > 1 ? "s" : "", p->day);
		for (i = 0; i < rp->elements && n < sizeof(p->why); i++)
			if (rp->element[i]->type == REDIS_REPLY_STRING)
				n += (size_t)snprintf(p->why + n, sizeof(p->why) - n, " %.*s",
						      (int)rp->element[i]->len,
						      rp->element[i]->str);
		prep_done(p, TLSRPT_FLEET_WAIT, p->why);
		return;
	}
	prep_advance(p);
}

/* Sends what the phase needs. */
static void prep_advance(struct tlsrpt_fleet_prep *p)
{
	char k1[KEY_MAX], k2[KEY_MAX];
	const char *argv[3];

	if (p->phase == P_CHECK && p->wait) {
		const char *cargv[7];
		char start[24];

		day_key(k1, sizeof(k1), p->day, "nodes", NULL);
		day_key(k2, sizeof(k2), p->day, "merged", NULL);
		snprintf(start, sizeof(start), "%" PRId64, p->md->start);
		cargv[0] = "EVAL";
		cargv[1] = check_lua;
		cargv[2] = "3";
		cargv[3] = k1;
		cargv[4] = k2;
		cargv[5] = SEEN_KEY;
		cargv[6] = start;
		p->phase = P_DOMAINS; /* next, after the check passes */
		if (prep_send(p, on_check, 7, cargv) != 0)
			prep_done(p, TLSRPT_FLEET_DOWN, "cannot ask Redis");
		return;
	}
	day_key(k1, sizeof(k1), p->day, "domains", NULL);
	argv[0] = "SMEMBERS";
	argv[1] = k1;
	p->phase = P_DOMAINS;
	if (prep_send(p, on_domains, 2, argv) != 0)
		prep_done(p, TLSRPT_FLEET_DOWN, "cannot ask Redis");
}

/* ---- the ledger ---- */

static void claim_key(char *out, size_t len, const char *day, const char *domain, const char *rua)
{
	char sub[KEY_MAX];

	snprintf(sub, sizeof(sub), "%s\t%s", domain, rua);
	day_key(out, len, day, "claim", sub);
}

static void on_claimed(void *arg, const redisReply *rp)
{
	struct claim *c = arg;
	struct tlsrpt_fleet *f = c->f;
	enum tlsrpt_claim r = TLSRPT_CLAIM_ERROR;

	f->claims--;
	if (rp != NULL && rp->type == REDIS_REPLY_STRING) {
		if (strcmp(rp->str, "mine") == 0)
			r = TLSRPT_CLAIM_MINE;
		else if (strcmp(rp->str, "sent") == 0)
			r = TLSRPT_CLAIM_SENT;
		else if (strcmp(rp->str, "busy") == 0)
			r = TLSRPT_CLAIM_BUSY;
	} else if (rp != NULL && rp->type == REDIS_REPLY_ERROR) {
		log_error("tlsrpt: the fleet's claim script failed: %s", rp->str);
	}
	if (!c->cancelled)
		c->cb(c->arg, r);
	free(c);
	maybe_free(f);
}

/* The keys both ledger scripts take, and their first seven arguments: EVAL,
 * the script, 2 keys (the day's sent set, this copy's claim), the member
 * "domain\trua", this node. */
struct ledger_keys {
	char ks[KEY_MAX], kc[KEY_MAX], member[KEY_MAX];
};

static void ledger_argv(const struct tlsrpt_fleet *f, struct ledger_keys *k, const char *script,
			const char *day, const char *domain, const char *rua, const char **argv)
{
	day_key(k->ks, sizeof(k->ks), day, "sent", NULL);
	claim_key(k->kc, sizeof(k->kc), day, domain, rua);
	snprintf(k->member, sizeof(k->member), "%s\t%s", domain, rua);
	argv[0] = "EVAL";
	argv[1] = script;
	argv[2] = "2";
	argv[3] = k->ks;
	argv[4] = k->kc;
	argv[5] = k->member;
	argv[6] = f->node;
}

static int ledger_claim(void *ctx, const char *day, const char *domain, const char *rua,
			tlsrpt_claim_cb cb, void *arg, void **handle)
{
	struct tlsrpt_fleet *f = ctx;
	struct ledger_keys k;
	char ttl[24];
	const char *argv[8];
	struct claim *c;

	if (f->closing || strlen(domain) + strlen(rua) + 2 > sizeof(k.member))
		return -1;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -1;
	c->f = f;
	c->cb = cb;
	c->arg = arg;
	ledger_argv(f, &k, claim_lua, day, domain, rua, argv);
	snprintf(ttl, sizeof(ttl), "%d", CLAIM_TTL_MS);
	argv[7] = ttl;
	/* no cancel of the command: the claim frees itself when its reply
	 * (or the NULL of a lost connection) comes */
	if (redis_command(f->redis, on_claimed, c, NULL, 8, argv, NULL) != 0) {
		free(c);
		return -1;
	}
	f->claims++;
	*handle = c;
	return 0;
}

static void ledger_cancel(void *ctx, void *handle)
{
	struct claim *c = handle;

	(void)ctx;
	c->cancelled = true;
}

static void ledger_release(void *ctx, const char *day, const char *domain, const char *rua,
			   bool sent)
{
	struct tlsrpt_fleet *f = ctx;
	struct ledger_keys k;
	char ttl[24];
	const char *argv[9];

	if (f->closing)
		return;
	ledger_argv(f, &k, release_lua, day, domain, rua, argv);
	snprintf(ttl, sizeof(ttl), "%" PRIu64, f->ttl_s);
	argv[7] = sent ? "1" : "0";
	argv[8] = ttl;
	/* Redis away: a sent copy reaches the set with this node's own
	 * ledger when the connection is back (the merger pushes it) */
	if (redis_command(f->redis, NULL, NULL, NULL, 9, argv, NULL) != 0)
		log_debug("tlsrpt %s: %s %s: the fleet's ledger is updated later", day, domain,
			  rua);
}

/* ---- public ---- */

static void on_tick_closed(uv_handle_t *h)
{
	struct tlsrpt_fleet *f = h->data;

	f->tick_open = false;
	maybe_free(f);
}

int tlsrpt_fleet_new(const struct tlsrpt_fleet_config *cfg, struct tlsrpt_fleet **out)
{
	struct tlsrpt_fleet *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	f->loop = cfg->loop;
	f->redis = cfg->redis;
	snprintf(f->spool, sizeof(f->spool), "%s", cfg->spool_dir);
	snprintf(f->node, sizeof(f->node), "%s", cfg->node);
	f->ttl_s = cfg->retention_s + 2 * 86400;
	f->background = cfg->background;
	f->ledger.ctx = f;
	f->ledger.claim = ledger_claim;
	f->ledger.cancel = ledger_cancel;
	f->ledger.release = ledger_release;
	if (uv_timer_init(cfg->loop, &f->tick) != 0) {
		free(f);
		return -1;
	}
	f->tick.data = f;
	f->tick_open = true;
	if (f->background) {
		uv_timer_start(&f->tick, on_tick, MERGE_EVERY_MS, MERGE_EVERY_MS);
		uv_unref((uv_handle_t *)&f->tick); /* never keeps the loop alive alone */
	}
	*out = f;
	return 0;
}

const struct tlsrpt_ledger *tlsrpt_fleet_ledger(struct tlsrpt_fleet *f)
{
	return &f->ledger;
}

void tlsrpt_fleet_redis_state(struct tlsrpt_fleet *f, bool up)
{
	size_t i;

	if (f == NULL || !up)
		return;
	/* Redis may have lost writes or everything: read each cursor again,
	 * push the sent ledgers and policy texts again, mark the days again */
	for (i = 0; i < NSLOTS; i++) {
		f->days[i].known = false;
		f->days[i].final_done = false;
		f->days[i].sent_sync = 0;
		f->days[i].npushed = f->days[i].pushed_next = 0;
	}
	if (f->background) {
		start_round(f);
		pump(f);
	}
}

int tlsrpt_fleet_prepare(struct tlsrpt_fleet *f, const char *day, bool wait_for_nodes,
			 tlsrpt_fleet_prep_cb cb, void *arg, struct tlsrpt_fleet_prep **out)
{
	struct tlsrpt_fleet_prep *p;
	struct mday *md;

	if (out != NULL)
		*out = NULL;
	if (f->closing)
		return -1;
	md = slot_for(f, day);
	if (md == NULL)
		return -1;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -1;
	p->f = f;
	memcpy(p->day, md->day, sizeof(p->day));
	p->wait = wait_for_nodes;
	p->cb = cb;
	p->arg = arg;
	p->md = md;
	p->phase = P_MERGE;
	p->next = f->preps;
	if (p->next != NULL)
		p->next->prevp = &p->next;
	f->preps = p;
	p->prevp = &f->preps;
	/* always from the loop: the tick looks at once */
	uv_timer_start(&f->tick, on_tick, 0, f->background ? MERGE_EVERY_MS : 0);
	if (out != NULL)
		*out = p;
	return 0;
}

void tlsrpt_fleet_prepare_cancel(struct tlsrpt_fleet_prep *p)
{
	if (p != NULL)
		prep_free(p);
}

void tlsrpt_fleet_free(struct tlsrpt_fleet *f)
{
	if (f == NULL || f->closing)
		return;
	if (f->preps != NULL)
		log_error("tlsrpt: fleet freed with a report run still preparing");
	while (f->preps != NULL)
		prep_free(f->preps);
	f->closing = true;
	redis_cancel(f->cmd);
	f->cmd = NULL;
	if (!f->work_busy) {
		mjob_free(f->job);
		f->job = NULL;
	}
	f->cur = NULL;
	uv_close((uv_handle_t *)&f->tick, on_tick_closed);
}
