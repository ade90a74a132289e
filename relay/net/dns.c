/* DNS for the relay: a c-ares channel whose sockets are watched by uv_poll and
 * whose timeouts run on one uv_timer; TXT, A/AAAA, TLSA and RFC 5321 MX lookups. */
#include "relay/net/dns.h"

#include <arpa/inet.h>
#include <ares.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "relay/core/log.h"
#include "relay/net/dns_msg.h"

#ifndef T_MX
#define T_MX 15
#endif
#ifndef T_TXT
#define T_TXT 16
#endif
#ifndef T_A
#define T_A 1
#endif
#ifndef T_AAAA
#define T_AAAA 28
#endif
#ifndef C_IN
#define C_IN 1
#endif
#define T_TLSA 52
#define EDNS_UDP_SIZE 1232 /* DNS flag day 2020: no IP fragmentation */

/* One c-ares socket and the poll handle watching it. The memory lives until
 * the handle's close callback, as libuv requires. */
struct dns_sock {
	uv_poll_t poll;
	ares_socket_t fd;
	struct dns *dns;
	struct dns_sock *next;
};

struct dns {
	uv_loop_t *loop;
	ares_channel ch;  /* NULL once destroyed */
	uv_timer_t timer; /* next c-ares timeout */
	uv_idle_t idle;   /* delivers results that completed during a lookup call */
	int open_handles; /* timer + idle, until their close callbacks */
	struct dns_sock *socks;
	struct dns_query *deferred_head, *deferred_tail;
	int depth;         /* > 0 while we dispatch c-ares or user callbacks */
	bool closing;      /* dns_free was called */
	bool dnssec;       /* DO and AD bits on every query (dns_options) */
	bool free_pending; /* ...from inside a dispatch: tear down at its end */
};

enum qkind { Q_TXT, Q_ADDR, Q_MX, Q_TLSA };
enum subkind { SUB_MAIN, SUB_A, SUB_AAAA };

/* The argument of one ares_query: which lookup, which part of it. */
struct sub {
	struct dns_query *q;
	enum subkind kind;
	struct addr_part *part; /* SUB_A / SUB_AAAA */
	bool ad;                /* the answer carried the AD bit */
};

/* A and AAAA answers for one name, kept compact until the result is built. */
struct addr_part {
	struct sub s4, s6;
	enum dns_status st4, st6;
	const char *why4, *why6;
	unsigned n4, n6;
	struct in_addr a4[DNS_MAX_ADDRS];
	struct in6_addr a6[DNS_MAX_ADDRS];
	char cname[DNS_NAME_MAX + 1]; /* end of a CNAME chain in either answer */
};

struct dns_query {
	struct dns *dns;
	enum qkind kind;
	int pending;         /* ares queries in flight + a start guard */
	bool starting;       /* inside dns_lookup_*: completion is deferred */
	bool user_cancelled; /* dns_cancel: drop the result silently */
	bool destroyed;      /* the channel went away: DNS_CANCELLED */
	bool literal;        /* Q_MX of an address literal: answered without DNS */
	struct dns_query *next_deferred;
	union {
		dns_txt_cb txt;
		dns_addr_cb addr;
		dns_mx_cb mx;
		dns_tlsa_cb tlsa;
	} cb;
	void *arg;
	char name[DNS_NAME_MAX + 1];
	struct sub main;         /* the TXT or MX query */
	struct addr_part addr;   /* Q_ADDR */
	struct addr_part *parts; /* Q_MX: one per result host */
	union {
		struct dns_txt_result *txt;
		struct dns_addr_result *addr;
		struct dns_mx_result *mx;
		struct dns_tlsa_result *tlsa;
	} res;
};

const char *dns_status_name(enum dns_status st)
{
	switch (st) {
	case DNS_OK:
		return "ok";
	case DNS_NXDOMAIN:
		return "nxdomain";
	case DNS_NODATA:
		return "nodata";
	case DNS_NULL_MX:
		return "null-mx";
	case DNS_NO_ADDRESS:
		return "no-address";
	case DNS_TEMPFAIL:
		return "tempfail";
	case DNS_CANCELLED:
		return "cancelled";
	}
	return "unknown";
}

/* c-ares status -> ours, with a static reason for logs. */
static enum dns_status map_ares(int status, const char **why)
{
	*why = "";
	switch (status) {
	case ARES_SUCCESS:
		return DNS_OK;
	case ARES_ENOTFOUND:
		*why = "NXDOMAIN";
		return DNS_NXDOMAIN;
	case ARES_ENODATA:
		*why = "no records";
		return DNS_NODATA;
	case ARES_EDESTRUCTION:
	case ARES_ECANCELLED:
		*why = "cancelled";
		return DNS_CANCELLED;
	case ARES_ESERVFAIL:
		*why = "SERVFAIL";
		return DNS_TEMPFAIL;
	case ARES_EREFUSED:
		*why = "REFUSED";
		return DNS_TEMPFAIL;
	case ARES_ETIMEOUT:
		*why = "timeout";
		return DNS_TEMPFAIL;
	/* c-ares 1.18 moves on to the next server (or try) after a SERVFAIL,
	 * REFUSED or ICMP-refused reply and reports ECONNREFUSED once all of
	 * them failed, so the three cannot be told apart here. */
	case ARES_ECONNREFUSED:
		*why = "SERVFAIL, REFUSED or unreachable";
		return DNS_TEMPFAIL;
	case ARES_EFORMERR:
		*why = "FORMERR";
		return DNS_TEMPFAIL;
	case ARES_ENOTIMP:
		*why = "NOTIMP";
		return DNS_TEMPFAIL;
	case ARES_EBADRESP:
		*why = "malformed answer";
		return DNS_TEMPFAIL;
	case ARES_ENOMEM:
		*why = "out of memory";
		return DNS_TEMPFAIL;
	default:
		*why = ares_strerror(status);
		return DNS_TEMPFAIL;
	}
}

/* ---------------------------------------------------------------- loop glue */

static void rearm(struct dns *d);
static void teardown(struct dns *d);
static void deliver(struct dns_query *q);
static void on_idle(uv_idle_t *h);

static void dispatch_begin(struct dns *d)
{
	d->depth++;
}

/* The single place where a deferred dns_free happens: after the outermost
 * dispatch returns, so no c-ares or user frame is still on the stack. */
static void dispatch_end(struct dns *d)
{
	if (--d->depth > 0)
		return;
	if (d->free_pending)
		teardown(d);
	else
		rearm(d);
}

static void on_timer(uv_timer_t *t)
{
	struct dns *d = t->data;

	dispatch_begin(d);
	ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dispatch_end(d);
}

static void rearm(struct dns *d)
{
	struct timeval tv, *tvp;
	uint64_t ms;

	if (d->ch == NULL)
		return;
	tvp = ares_timeout(d->ch, NULL, &tv);
	if (tvp == NULL) {
		uv_timer_stop(&d->timer);
		return;
	}
	ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
	uv_timer_start(&d->timer, on_timer, ms, 0);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	struct dns_sock *s = h->data;
	struct dns *d = s->dns;
	ares_socket_t fd = s->fd;
	ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

	/* On a poll error let c-ares read/write the socket and see the error
	 * itself; it then closes it and moves on to another try. */
	if (status < 0 || (events & UV_READABLE))
		rfd = fd;
	if (status < 0 || (events & UV_WRITABLE))
		wfd = fd;
	/* s may be closed (not yet freed) inside ares_process_fd: not used after. */
	dispatch_begin(d);
	ares_process_fd(d->ch, rfd, wfd);
	dispatch_end(d);
}

static void on_sock_closed(uv_handle_t *h)
{
	free(h->data);
}

static void sock_close(struct dns *d, struct dns_sock *s)
{
	struct dns_sock **pp;

	for (pp = &d->socks; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

/* c-ares tells us which sockets it wants watched, and for what. It calls
 * this with (0, 0) before it closes a socket, so the poll handle is stopped
 * while the descriptor is still valid. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns *d = data;
	struct dns_sock *s;
	int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
	int rc;

	for (s = d->socks; s != NULL; s = s->next)
		if (s->fd == fd)
			break;
	if (events == 0) {
		if (s != NULL)
			sock_close(d, s);
		return;
	}
	if (s == NULL) {
		s = calloc(1, sizeof(*s));
		if (s == NULL) {
			log_error("dns: out of memory watching a resolver socket");
			return; /* the query then times out via ares_timeout */
		}
		rc = uv_poll_init_socket(d->loop, &s->poll, fd);
		if (rc < 0) {
			log_error("dns: cannot watch resolver socket: %s", uv_strerror(rc));
			free(s);
			return;
		}
		s->fd = fd;
		s->dns = d;
		s->poll.data = s;
		s->next = d->socks;
		d->socks = s;
	}
	rc = uv_poll_start(&s->poll, events, on_poll);
	if (rc < 0)
		log_error("dns: uv_poll_start: %s", uv_strerror(rc));
}

static void on_handle_closed(uv_handle_t *h)
{
	struct dns *d = h->data;

	if (--d->open_handles == 0) {
		ares_library_cleanup();
		free(d);
	}
}

/* ------------------------------------------------------------ query life */

static void part_reset(struct addr_part *p, struct dns_query *q)
{
	memset(p, 0, sizeof(*p));
	p->s4.q = q;
	p->s4.kind = SUB_A;
	p->s4.part = p;
	p->s6.q = q;
	p->s6.kind = SUB_AAAA;
	p->s6.part = p;
	p->st4 = p->st6 = DNS_NODATA;
	p->why4 = p->why6 = "";
}

static void txt_records_free(struct dns_txt_result *r)
{
	for (size_t i = 0; i < r->nrecords; i++) {
		if (r->records[i].strings == NULL)
			continue; /* allocation stopped before this record */
		for (size_t j = 0; j < r->records[i].nstrings; j++)
			free(r->records[i].strings[j].data);
		free(r->records[i].strings);
	}
	free(r->records);
	r->records = NULL;
	r->nrecords = 0;
}

void dns_txt_result_free(struct dns_txt_result *res)
{
	if (res == NULL)
		return;
	txt_records_free(res);
	free(res);
}

void dns_addr_result_free(struct dns_addr_result *res)
{
	if (res == NULL)
		return;
	free(res->addrs);
	free(res);
}

static void mx_hosts_free(struct dns_mx_result *r)
{
	for (size_t i = 0; i < r->nhosts; i++)
		free(r->hosts[i].addrs);
	free(r->hosts);
	r->hosts = NULL;
	r->nhosts = 0;
}

void dns_mx_result_free(struct dns_mx_result *res)
{
	if (res == NULL)
		return;
	mx_hosts_free(res);
	free(res);
}

void dns_tlsa_result_free(struct dns_tlsa_result *res)
{
	free(res);
}

static void query_free(struct dns_query *q, bool with_result)
{
	if (with_result) {
		switch (q->kind) {
		case Q_TXT:
			dns_txt_result_free(q->res.txt);
			break;
		case Q_ADDR:
			dns_addr_result_free(q->res.addr);
			break;
		case Q_MX:
			dns_mx_result_free(q->res.mx);
			break;
		case Q_TLSA:
			dns_tlsa_result_free(q->res.tlsa);
			break;
		}
	}
	free(q->parts);
	free(q);
}

/* Names are checked here so c-ares never sees something odd: 1..253 bytes
 * once a trailing dot is removed, printable, no empty label, no escapes. */
static int name_copy(char *dst, const char *name)
{
	size_t len;

	if (name == NULL)
		return -EINVAL;
	len = strlen(name);
	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > DNS_NAME_MAX)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c <= 0x20 || c >= 0x7f || c == '\\')
			return -EINVAL;
		if (c == '.' && (i == 0 || name[i - 1] == '.'))
			return -EINVAL;
	}
	memcpy(dst, name, len);
	dst[len] = '\0';
	return 0;
}

static struct dns_query *query_new(struct dns *d, enum qkind kind, const char *name, void *arg,
				   int *err)
{
	struct dns_query *q;

	*err = 0;
	if (d == NULL || d->closing) {
		*err = -ESHUTDOWN;
		return NULL;
	}
	q = calloc(1, sizeof(*q));
	if (q == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	*err = name_copy(q->name, name);
	if (*err < 0) {
		free(q);
		return NULL;
	}
	q->dns = d;
	q->kind = kind;
	q->arg = arg;
	q->main.q = q;
	q->main.kind = SUB_MAIN;
	part_reset(&q->addr, q);
	switch (kind) {
	case Q_TXT:
		q->res.txt = calloc(1, sizeof(*q->res.txt));
		break;
	case Q_ADDR:
		q->res.addr = calloc(1, sizeof(*q->res.addr));
		break;
	case Q_MX:
		q->res.mx = calloc(1, sizeof(*q->res.mx));
		break;
	case Q_TLSA:
		q->res.tlsa = calloc(1, sizeof(*q->res.tlsa));
		break;
	}
	if (q->res.txt == NULL) { /* any member: they share storage */
		free(q);
		*err = -ENOMEM;
		return NULL;
	}
	q->pending = 1; /* start guard, released by query_release */
	q->starting = true;
	return q;
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

/* ares_send hands over the whole answer whatever its RCODE (SERVFAIL,
 * REFUSED and NOTIMP already made c-ares try the next server): the status
 * as ares_query would say it, and the AD bit kept for the result. */
static void on_raw(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct sub *s = arg;

	if (status == ARES_SUCCESS && (abuf == NULL || alen < 12))
		status = ARES_EBADRESP;
	if (status == ARES_SUCCESS) {
		unsigned ancount = (unsigned)abuf[6] << 8 | abuf[7];

		switch (abuf[3] & 0x0f) {
		case 0: /* NOERROR */
			status = ancount > 0 ? ARES_SUCCESS : ARES_ENODATA;
			break;
		case 1:
			status = ARES_EFORMERR;
			break;
		case 2:
			status = ARES_ESERVFAIL;
			break;
		case 3:
			status = ARES_ENOTFOUND;
			break;
		case 4:
			status = ARES_ENOTIMP;
			break;
		case 5:
			status = ARES_EREFUSED;
			break;
		default:
			status = ARES_EBADRESP;
			break;
		}
		/* AD on data and on a denial alike (RFC 4035 §3.2.3). */
		s->ad = (abuf[3] & 0x20) != 0;
	}
	on_answer(arg, status, timeouts, abuf, alen);
}

/* The query as ares_query builds it (recursion desired, EDNS0 with a UDP
 * size that avoids fragments), and with the resolver in DNSSEC mode the DO
 * bit in the OPT record and AD in the header, so a validating resolver
 * says whether it validated the answer. */
static int build_query(struct dns *d, const char *name, int type, unsigned char **buf, int *len)
{
	int rc = ares_create_query(name, C_IN, type, 0, 1, buf, len, EDNS_UDP_SIZE);
	unsigned char *b = *buf;
	int n = *len;

	if (rc != ARES_SUCCESS || !d->dnssec)
		return rc;
	/* The OPT RR is the last 11 octets: root name, TYPE 41, CLASS (UDP
	 * size), TTL (extended RCODE, version, flags: DO is the top bit),
	 * RDLEN 0. Anything else means c-ares changed what it builds. */
	if (n < 12 + 11 || b[10] != 0 || b[11] != 1 || b[n - 11] != 0 || b[n - 10] != 0 ||
	    b[n - 9] != 41) {
		ares_free_string(b);
		*buf = NULL;
		return ARES_EBADQUERY;
	}
	b[n - 4] |= 0x80; /* DO */
	b[3] |= 0x20;     /* AD */
	return ARES_SUCCESS;
}

/* Starts one ares query for q. Returns false when the resolver is closing
 * (q is then marked destroyed). */
static bool sub_start(struct dns_query *q, struct sub *s, const char *name, int type)
{
	struct dns *d = q->dns;
	unsigned char *qbuf = NULL;
	int qlen = 0, rc;

	if (d->closing || d->ch == NULL) {
		q->destroyed = true;
		return false;
	}
	q->pending++;
	s->ad = false;
	/* Either path may call on_answer synchronously (no server, no
	 * memory): the start guard and q->starting keep q alive and the user
	 * callback deferred. ares_send gives the query its own random id. */
	rc = build_query(d, name, type, &qbuf, &qlen);
	if (rc != ARES_SUCCESS) {
		on_answer(s, rc == ARES_ENOMEM ? ARES_ENOMEM : ARES_EBADQUERY, 0, NULL, 0);
		return true;
	}
	ares_send(d->ch, qbuf, qlen, on_raw, s);
	ares_free_string(qbuf);
	return true;
}

static void addr_build(struct addr_part *p, struct sockaddr_storage **out, size_t *nout,
		       enum dns_status *st, const char **why);
static void mx_finish(struct dns_query *q);
static void addr_secure(const struct addr_part *p, bool *secure, char *cname);

/* The resolver went away: whatever was gathered is dropped. */
static void result_cancel(struct dns_query *q)
{
	switch (q->kind) {
	case Q_TXT:
		txt_records_free(q->res.txt);
		q->res.txt->status = DNS_CANCELLED;
		q->res.txt->why = "cancelled";
		break;
	case Q_ADDR:
		free(q->res.addr->addrs);
		q->res.addr->addrs = NULL;
		q->res.addr->naddrs = 0;
		q->res.addr->status = DNS_CANCELLED;
		q->res.addr->why = "cancelled";
		break;
	case Q_MX:
		mx_hosts_free(q->res.mx);
		q->res.mx->implicit = false;
		q->res.mx->status = DNS_CANCELLED;
		q->res.mx->why = "cancelled";
		break;
	case Q_TLSA:
		q->res.tlsa->set.n = 0;
		q->res.tlsa->secure = false;
		q->res.tlsa->status = DNS_CANCELLED;
		q->res.tlsa->why = "cancelled";
		break;
	}
}

/* All parts are in: build the result, then hand it over (now or, when still
 * inside the lookup call, from the idle handle). */
static void query_complete(struct dns_query *q)
{
	struct dns *d = q->dns;

	if (q->user_cancelled) {
		query_free(q, true);
		return;
	}
	if (q->destroyed) {
		result_cancel(q);
	} else if (q->kind == Q_ADDR) {
		addr_build(&q->addr, &q->res.addr->addrs, &q->res.addr->naddrs,
			   &q->res.addr->status, &q->res.addr->why);
		addr_secure(&q->addr, &q->res.addr->secure, q->res.addr->cname);
	} else if (q->kind == Q_MX && !q->literal) {
		mx_finish(q);
	} /* Q_TXT, Q_TLSA: built in their answer callbacks */
	if (q->starting) {
		q->next_deferred = NULL;
		if (d->deferred_tail != NULL)
			d->deferred_tail->next_deferred = q;
		else
			d->deferred_head = q;
		d->deferred_tail = q;
		uv_idle_start(&d->idle, on_idle);
		return;
	}
	deliver(q);
}

static void query_release(struct dns_query *q)
{
	if (--q->pending == 0)
		query_complete(q);
}

static enum dns_status query_status(const struct dns_query *q)
{
	switch (q->kind) {
	case Q_TXT:
		return q->res.txt->status;
	case Q_MX:
		return q->res.mx->status;
	case Q_TLSA:
		return q->res.tlsa->status;
	case Q_ADDR:
		break;
	}
	return q->res.addr->status;
}

static const char *query_why(const struct dns_query *q)
{
	switch (q->kind) {
	case Q_TXT:
		return q->res.txt->why;
	case Q_MX:
		return q->res.mx->why;
	case Q_TLSA:
		return q->res.tlsa->why;
	case Q_ADDR:
		break;
	}
	return q->res.addr->why;
}

static const char *const qkind_names[] = {
	[Q_TXT] = "TXT", [Q_ADDR] = "A/AAAA", [Q_MX] = "MX", [Q_TLSA] = "TLSA"
};

static void deliver(struct dns_query *q)
{
	struct dns *d = q->dns;

	if (q->user_cancelled) {
		query_free(q, true);
		return;
	}
	log_debug("dns: %s %s: %s%s%s%s", qkind_names[q->kind], q->name,
		  dns_status_name(query_status(q)), query_why(q)[0] ? " (" : "", query_why(q),
		  query_why(q)[0] ? ")" : "");
	d->depth++;
	switch (q->kind) {
	case Q_TXT:
		q->cb.txt(q->res.txt, q->arg);
		break;
	case Q_ADDR:
		q->cb.addr(q->res.addr, q->arg);
		break;
	case Q_MX:
		q->cb.mx(q->res.mx, q->arg);
		break;
	case Q_TLSA:
		q->cb.tlsa(q->res.tlsa, q->arg);
		break;
	}
	d->depth--;
	query_free(q, false); /* the result now belongs to the callback */
}

static void on_idle(uv_idle_t *h)
{
	struct dns *d = h->data;
	struct dns_query *q;

	dispatch_begin(d);
	/* Callbacks may queue more: those wait for the next loop turn. */
	q = d->deferred_head;
	d->deferred_head = d->deferred_tail = NULL;
	while (q != NULL) {
		struct dns_query *next = q->next_deferred;
		deliver(q);
		q = next;
	}
	if (d->deferred_head == NULL)
		uv_idle_stop(&d->idle);
	dispatch_end(d);
}

/* The end of a lookup call: release the guard while still "starting" so a
 * synchronous completion is deferred, then re-arm the timer. */
static void query_launched(struct dns_query *q, struct dns_query **qp)
{
	struct dns *d = q->dns;

	if (qp != NULL)
		*qp = q;
	if (--q->pending > 0)
		q->starting = false; /* answers come later, from the loop */
	else
		query_complete(q); /* finished already: queued for the idle handle */
	if (d->depth == 0)
		rearm(d);
}

void dns_cancel(struct dns_query *q)
{
	if (q != NULL)
		q->user_cancelled = true;
}

/* ------------------------------------------------------------------- TXT */

static void tlsa_answer(struct dns_query *q, int status, const unsigned char *abuf, int alen);

static void txt_answer(struct dns_query *q, int status, const unsigned char *abuf, int alen)
{
	struct dns_txt_result *r = q->res.txt;
	struct ares_txt_ext *list = NULL, *t;
	size_t nrec = 0, ri;
	int rc;

	r->status = map_ares(status, &r->why);
	if (r->status != DNS_OK)
		return;
	rc = ares_parse_txt_reply_ext(abuf, alen, &list);
	if (rc != ARES_SUCCESS) {
		r->status = map_ares(rc == ARES_ENODATA ? rc : ARES_EBADRESP, &r->why);
		goto out;
	}
	for (t = list; t != NULL; t = t->next)
		if (t->record_start || t == list)
			nrec++;
	if (nrec == 0) {
		r->status = map_ares(ARES_ENODATA, &r->why);
		goto out;
	}
	r->records = calloc(nrec, sizeof(*r->records));
	if (r->records == NULL)
		goto nomem;
	r->nrecords = nrec;
	/* Count strings per record, then copy them. */
	ri = 0;
	for (t = list; t != NULL; t = t->next) {
		if (t != list && t->record_start)
			ri++;
		r->records[ri].nstrings++;
	}
	for (ri = 0; ri < nrec; ri++) {
		r->records[ri].strings = calloc(r->records[ri].nstrings,
						sizeof(*r->records[ri].strings));
		if (r->records[ri].strings == NULL)
			goto nomem;
		r->records[ri].nstrings = 0; /* recounted while filling */
	}
	ri = 0;
	for (t = list; t != NULL; t = t->next) {
		struct dns_txt_record *rec;
		struct dns_txt_string *s;

		if (t != list && t->record_start)
			ri++;
		rec = &r->records[ri];
		s = &rec->strings[rec->nstrings];
		s->data = malloc(t->length + 1);
		if (s->data == NULL)
			goto nomem;
		memcpy(s->data, t->txt, t->length);
		s->data[t->length] = '\0';
		s->len = t->length;
		rec->nstrings++;
	}
	goto out;
nomem:
	txt_records_free(r);
	r->status = map_ares(ARES_ENOMEM, &r->why);
out:
	if (list != NULL)
		ares_free_data(list);
}

int dns_lookup_txt(struct dns *dns, const char *name, dns_txt_cb cb, void *arg,
		   struct dns_query **qp)
{
	int err;
	struct dns_query *q = query_new(dns, Q_TXT, name, arg, &err);

	if (q == NULL)
		return err;
	q->cb.txt = cb;
	sub_start(q, &q->main, q->name, T_TXT);
	query_launched(q, qp);
	return 0;
}

/* ---------------------------------------------------------------- A/AAAA */

static void part_answer(struct addr_part *p, bool v6, int status, const unsigned char *abuf,
			int alen)
{
	enum dns_status *st = v6 ? &p->st6 : &p->st4;
	const char **why = v6 ? &p->why6 : &p->why4;
	int rc, n = DNS_MAX_ADDRS;

	*st = map_ares(status, why);
	if (*st != DNS_OK)
		return;
	if (v6) {
		struct ares_addr6ttl t[DNS_MAX_ADDRS];
		rc = ares_parse_aaaa_reply(abuf, alen, NULL, t, &n);
		if (rc == ARES_SUCCESS)
			for (int i = 0; i < n && i < DNS_MAX_ADDRS; i++)
				memcpy(&p->a6[p->n6++], &t[i].ip6addr, sizeof(p->a6[0]));
	} else {
		struct ares_addrttl t[DNS_MAX_ADDRS];
		rc = ares_parse_a_reply(abuf, alen, NULL, t, &n);
		if (rc == ARES_SUCCESS)
			for (int i = 0; i < n && i < DNS_MAX_ADDRS; i++)
				p->a4[p->n4++] = t[i].ipaddr;
	}
	if (rc == ARES_SUCCESS && p->cname[0] == '\0') {
		struct dns_msg_info info;
		const char *why_msg;

		/* RFC 7672 §2.2.2: TLSA is first looked up at the name the
		 * CNAME chain ends at. */
		if (dns_msg_read(abuf, (size_t)alen, v6 ? T_AAAA : T_A, &info, NULL, NULL,
				 &why_msg) == 0 &&
		    info.cname)
			(void)name_copy(p->cname, info.target); /* "" when it is odd */
	}
	if (rc == ARES_SUCCESS && (v6 ? p->n6 : p->n4) == 0)
		rc = ARES_ENODATA; /* e.g. only a CNAME to a name without records */
	if (rc != ARES_SUCCESS)
		*st = map_ares(rc == ARES_ENODATA || rc == ARES_ENOMEM ? rc : ARES_EBADRESP, why);
}

/* Both answers in: addresses (IPv4 first) and one status. */
static void addr_build(struct addr_part *p, struct sockaddr_storage **out, size_t *nout,
		       enum dns_status *st, const char **why)
{
	size_t half = DNS_MAX_ADDRS / 2;
	size_t take4 = p->n4, take6 = p->n6, cap4, n;
	struct sockaddr_storage *a;

	*out = NULL;
	*nout = 0;
	/* Each family keeps at least half of the slots if it has that many
	 * addresses; the other family may use whatever is left. */
	cap4 = take6 < half ? DNS_MAX_ADDRS - take6 : half;
	if (take4 > cap4)
		take4 = cap4;
	if (take6 > DNS_MAX_ADDRS - take4)
		take6 = DNS_MAX_ADDRS - take4;
	n = take4 + take6;
	if (n > 0) {
		a = calloc(n, sizeof(*a));
		if (a == NULL) {
			*st = map_ares(ARES_ENOMEM, why);
			return;
		}
		for (size_t i = 0; i < take4; i++) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&a[i];
			sin->sin_family = AF_INET;
			sin->sin_addr = p->a4[i];
		}
		for (size_t i = 0; i < take6; i++) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a[take4 + i];
			sin6->sin6_family = AF_INET6;
			sin6->sin6_addr = p->a6[i];
		}
		*out = a;
		*nout = n;
		*st = DNS_OK;
		*why = "";
		return;
	}
	if (p->st4 == DNS_TEMPFAIL || p->st6 == DNS_TEMPFAIL) {
		*st = DNS_TEMPFAIL;
		*why = p->st4 == DNS_TEMPFAIL ? p->why4 : p->why6;
	} else if (p->st4 == DNS_NXDOMAIN || p->st6 == DNS_NXDOMAIN) {
		*st = DNS_NXDOMAIN;
		*why = "NXDOMAIN";
	} else {
		*st = DNS_NODATA;
		*why = "no A/AAAA records";
	}
}

/* Secure when each of the two answers had AD and none failed: an address
 * set half of which an attacker could have forged is not secure. */
static void addr_secure(const struct addr_part *p, bool *secure, char *cname)
{
	*secure = p->s4.ad && p->s6.ad && p->st4 != DNS_TEMPFAIL && p->st6 != DNS_TEMPFAIL &&
		  p->st4 != DNS_CANCELLED && p->st6 != DNS_CANCELLED;
	memcpy(cname, p->cname, sizeof(p->cname));
}

static void part_start(struct dns_query *q, struct addr_part *p, const char *name)
{
	if (sub_start(q, &p->s4, name, T_A))
		sub_start(q, &p->s6, name, T_AAAA);
}

int dns_lookup_addr(struct dns *dns, const char *name, dns_addr_cb cb, void *arg,
		    struct dns_query **qp)
{
	int err;
	struct dns_query *q = query_new(dns, Q_ADDR, name, arg, &err);

	if (q == NULL)
		return err;
	q->cb.addr = cb;
	part_start(q, &q->addr, q->name);
	query_launched(q, qp);
	return 0;
}

/* ------------------------------------------------------------------ TLSA */

static void tlsa_answer(struct dns_query *q, int status, const unsigned char *abuf, int alen)
{
	struct dns_tlsa_result *r = q->res.tlsa;
	struct dns_msg_info info;
	const char *why;

	r->status = map_ares(status, &r->why);
	r->secure = q->main.ad &&
		    (r->status == DNS_OK || r->status == DNS_NODATA || r->status == DNS_NXDOMAIN);
	if (r->status != DNS_OK)
		return;
	if (dns_msg_tlsa(abuf, (size_t)alen, &info, &r->set, &r->unparsed, &why) != 0) {
		r->secure = false;
		r->status = map_ares(ARES_EBADRESP, &r->why);
		return;
	}
	if (r->set.n == 0 && r->unparsed == 0) {
		/* a CNAME chain to a name without TLSA records */
		r->status = map_ares(ARES_ENODATA, &r->why);
	}
}

int dns_lookup_tlsa(struct dns *dns, const char *name, dns_tlsa_cb cb, void *arg,
		    struct dns_query **qp)
{
	int err;
	struct dns_query *q = query_new(dns, Q_TLSA, name, arg, &err);

	if (q == NULL)
		return err;
	q->cb.tlsa = cb;
	sub_start(q, &q->main, q->name, T_TLSA);
	query_launched(q, qp);
	return 0;
}

/* -------------------------------------------------------------------- MX */

struct mx_tmp {
	const char *host;
	unsigned pref;
	uint32_t shuffle; /* random tie-break between equal preferences */
};

static int mx_cmp(const void *a, const void *b)
{
	const struct mx_tmp *x = a, *y = b;

	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	if (x->shuffle != y->shuffle)
		return x->shuffle < y->shuffle ? -1 : 1;
	return 0;
}

static bool mx_is_root(const char *h)
{
	return h[0] == '\0' || strcmp(h, ".") == 0;
}

/* Puts the hosts into the result and starts their address lookups. */
static void mx_hosts_start(struct dns_query *q, const struct mx_tmp *v, size_t n)
{
	struct dns_mx_result *r = q->res.mx;

	r->hosts = calloc(n, sizeof(*r->hosts));
	q->parts = calloc(n, sizeof(*q->parts));
	if (r->hosts == NULL || q->parts == NULL) {
		free(r->hosts);
		r->hosts = NULL;
		r->status = map_ares(ARES_ENOMEM, &r->why);
		return;
	}
	r->nhosts = n;
	for (size_t i = 0; i < n; i++) {
		struct dns_mx_host *h = &r->hosts[i];

		(void)name_copy(h->name, v[i].host); /* checked by the caller */
		h->preference = v[i].pref;
		h->status = DNS_TEMPFAIL;
		h->why = "not resolved";
		part_reset(&q->parts[i], q);
	}
	for (size_t i = 0; i < n; i++)
		part_start(q, &q->parts[i], r->hosts[i].name);
}

static void mx_answer(struct dns_query *q, int status, const unsigned char *abuf, int alen)
{
	struct dns_mx_result *r = q->res.mx;
	struct ares_mx_reply *list = NULL, *m;
	struct mx_tmp *v = NULL;
	size_t n = 0, nreal = 0, kept = 0;
	int rc;

	r->status = map_ares(status, &r->why);
	r->secure = q->main.ad && (r->status == DNS_OK || r->status == DNS_NODATA);
	if (r->status == DNS_OK) {
		rc = ares_parse_mx_reply(abuf, alen, &list);
		if (rc != ARES_SUCCESS)
			r->status = map_ares(
				rc == ARES_ENODATA || rc == ARES_ENOMEM ? rc : ARES_EBADRESP,
				&r->why);
	}
	if (r->status == DNS_NODATA) {
		/* RFC 5321 §5.1: no MX -> the domain is its own implicit MX. */
		struct mx_tmp self = { q->name, 0, 0 };
		r->status = DNS_OK;
		r->why = "";
		r->implicit = true;
		mx_hosts_start(q, &self, 1);
		goto out;
	}
	if (r->status != DNS_OK)
		goto out;
	for (m = list; m != NULL; m = m->next) {
		n++;
		if (!mx_is_root(m->host))
			nreal++;
	}
	if (nreal == 0) {
		/* RFC 7505: "0 ." says the domain accepts no mail. Only root
		 * targets (whatever the preference) mean the same. */
		r->status = n > 0 ? DNS_NULL_MX : DNS_NODATA;
		r->why = n > 0 ? "null MX" : "no records";
		goto out;
	}
	v = calloc(nreal, sizeof(*v));
	if (v == NULL) {
		r->status = map_ares(ARES_ENOMEM, &r->why);
		goto out;
	}
	for (m = list; m != NULL; m = m->next) {
		char tmp[DNS_NAME_MAX + 1];
		/* A target we could not even ask about is no MX host. */
		if (mx_is_root(m->host) || name_copy(tmp, m->host) < 0)
			continue;
		v[kept].host = m->host;
		v[kept].pref = m->priority;
		v[kept].shuffle = arc4random();
		kept++;
	}
	qsort(v, kept, sizeof(*v), mx_cmp);
	/* Drop repeated hosts (case-insensitive, trailing dot ignored): the
	 * first, lowest-preference one stays. */
	n = 0;
	for (size_t i = 0; i < kept && n < DNS_MAX_MX_HOSTS; i++) {
		bool dup = false;
		size_t li = strlen(v[i].host);
		if (li > 0 && v[i].host[li - 1] == '.')
			li--;
		for (size_t j = 0; j < n && !dup; j++) {
			size_t lj = strlen(v[j].host);
			if (lj > 0 && v[j].host[lj - 1] == '.')
				lj--;
			dup = li == lj && strncasecmp(v[i].host, v[j].host, li) == 0;
		}
		if (!dup)
			v[n++] = v[i];
	}
	if (n == 0) {
		r->status = DNS_NO_ADDRESS;
		r->why = "no usable MX host";
		goto out;
	}
	mx_hosts_start(q, v, n);
out:
	free(v);
	if (list != NULL)
		ares_free_data(list);
}

/* Address answers are in: per-host status, then the overall one. */
static void mx_finish(struct dns_query *q)
{
	struct dns_mx_result *r = q->res.mx;
	bool any_addr = false, any_temp = false;
	const char *temp_why = "";

	if (r->nhosts == 0)
		return; /* status decided by the MX answer alone */
	for (size_t i = 0; i < r->nhosts; i++) {
		struct dns_mx_host *h = &r->hosts[i];
		addr_build(&q->parts[i], &h->addrs, &h->naddrs, &h->status, &h->why);
		addr_secure(&q->parts[i], &h->secure, h->cname);
		if (h->naddrs > 0)
			any_addr = true;
		if (h->status == DNS_TEMPFAIL && !any_temp) {
			any_temp = true;
			temp_why = h->why;
		}
	}
	if (any_addr) {
		r->status = DNS_OK;
		r->why = "";
	} else if (any_temp) {
		r->status = DNS_TEMPFAIL;
		r->why = temp_why;
	} else if (r->implicit && r->hosts[0].status == DNS_NXDOMAIN) {
		r->status = DNS_NXDOMAIN;
		r->why = "NXDOMAIN";
	} else {
		r->status = DNS_NO_ADDRESS;
		r->why = r->implicit ? "no MX and no A/AAAA records" : "no MX host has an address";
	}
}

/* "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3): the one host,
 * named by its address, without a query. 1 when domain is such a literal
 * (r filled), 0 when it is not, -1 when it is bracketed but bad. */
static int mx_literal(const char *domain, struct dns_mx_result *r)
{
	char text[DNS_NAME_MAX + 1];
	const char *ip;
	size_t len = strlen(domain);
	struct sockaddr_storage *ss;

	if (len < 3 || domain[0] != '[' || domain[len - 1] != ']')
		return 0;
	if (len - 2 >= sizeof(text))
		return -1;
	memcpy(text, domain + 1, len - 2);
	text[len - 2] = '\0';
	ip = strncasecmp(text, "IPv6:", 5) == 0 ? text + 5 : text;
	r->hosts = calloc(1, sizeof(*r->hosts));
	ss = calloc(1, sizeof(*ss));
	if (r->hosts == NULL || ss == NULL) {
		free(r->hosts);
		r->hosts = NULL;
		free(ss);
		return -1;
	}
	if (ip == text && inet_pton(AF_INET, ip, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		ss->ss_family = AF_INET;
	} else if (ip != text &&
		   inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		ss->ss_family = AF_INET6;
	} else {
		free(r->hosts);
		r->hosts = NULL;
		free(ss);
		return -1;
	}
	snprintf(r->hosts[0].name, sizeof(r->hosts[0].name), "%s", ip);
	r->hosts[0].status = DNS_OK;
	r->hosts[0].why = "";
	r->hosts[0].naddrs = 1;
	r->hosts[0].addrs = ss;
	r->nhosts = 1;
	r->implicit = true;
	r->status = DNS_OK;
	r->why = "";
	return 1;
}

int dns_resolve_mx(struct dns *dns, const char *domain, dns_mx_cb cb, void *arg,
		   struct dns_query **qp)
{
	int err, lit;
	struct dns_query *q = query_new(dns, Q_MX, domain, arg, &err);

	if (q == NULL)
		return err;
	q->cb.mx = cb;
	lit = mx_literal(q->name, q->res.mx);
	if (lit < 0) {
		query_free(q, true);
		return -EINVAL;
	}
	q->literal = lit == 1;
	if (!q->literal)
		sub_start(q, &q->main, q->name, T_MX);
	query_launched(q, qp); /* a literal completes from the loop, as any answer */
	return 0;
}

int dns_resolve_host(struct dns *dns, const char *host, dns_mx_cb cb, void *arg,
		     struct dns_query **qp)
{
	int err;
	struct dns_query *q = query_new(dns, Q_MX, host, arg, &err);
	struct mx_tmp self;

	if (q == NULL)
		return err;
	q->cb.mx = cb;
	/* The answer an MX lookup gives for a domain without MX records:
	 * mx_finish() then judges the one host's addresses the same way. */
	self.host = q->name;
	self.pref = 0;
	self.shuffle = 0;
	q->res.mx->implicit = true;
	mx_hosts_start(q, &self, 1);
	query_launched(q, qp);
	return 0;
}

/* The one c-ares callback: route the answer to its part, then release. */
static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct sub *s = arg;
	struct dns_query *q = s->q;

	if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED)
		q->destroyed = true;
	if (!q->destroyed && !q->user_cancelled) {
		switch (s->kind) {
		case SUB_MAIN:
			if (q->kind == Q_TXT)
				txt_answer(q, status, abuf, alen);
			else if (q->kind == Q_TLSA)
				tlsa_answer(q, status, abuf, alen);
			else
				mx_answer(q, status, abuf, alen);
			break;
		case SUB_A:
			part_answer(s->part, false, status, abuf, alen);
			break;
		case SUB_AAAA:
			part_answer(s->part, true, status, abuf, alen);
			break;
		}
	}
	query_release(q);
}

/* ------------------------------------------------------------- lifecycle */

int dns_new(uv_loop_t *loop, const struct config_addr *servers, size_t n,
	    const struct dns_options *opts, struct dns **out)
{
	struct dns *d = NULL;
	struct ares_options ao;
	struct ares_addr_port_node *nodes = NULL;
	int mask, rc, err = 0;
	bool lib = false;

	*out = NULL;
	if (loop == NULL || (n > 0 && servers == NULL))
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return -ENOMEM;
	d->loop = loop;
	d->dnssec = opts != NULL && opts->dnssec;
	if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
		err = -EIO;
		goto fail;
	}
	lib = true;

	memset(&ao, 0, sizeof(ao));
	ao.sock_state_cb = on_sock_state;
	ao.sock_state_cb_data = d;
	ao.timeout = (int)(opts != NULL && opts->timeout_ms > 0 ? opts->timeout_ms
								: DNS_DEFAULT_TIMEOUT_MS);
	ao.tries = (int)(opts != NULL && opts->tries > 0 ? opts->tries : DNS_DEFAULT_TRIES);
	/* EDNS so TXT and MX answers usually fit in UDP (c-ares retries over
	 * TCP when truncated); no HOSTALIASES, no search list. */
	ao.flags = ARES_FLAG_EDNS | ARES_FLAG_NOALIASES | ARES_FLAG_NOSEARCH;
	ao.ednspsz = EDNS_UDP_SIZE;
	mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS |
	       ARES_OPT_EDNSPSZ;
	rc = ares_init_options(&d->ch, &ao, mask);
	if (rc != ARES_SUCCESS) {
		log_error("dns: c-ares init: %s", ares_strerror(rc));
		d->ch = NULL;
		err = rc == ARES_ENOMEM ? -ENOMEM : -EIO;
		goto fail;
	}
	if (n > 0) {
		nodes = calloc(n, sizeof(*nodes));
		if (nodes == NULL) {
			err = -ENOMEM;
			goto fail;
		}
		for (size_t i = 0; i < n; i++) {
			const struct sockaddr *sa = (const struct sockaddr *)&servers[i].sa;
			nodes[i].next = i + 1 < n ? &nodes[i + 1] : NULL;
			nodes[i].family = sa->sa_family;
			if (sa->sa_family == AF_INET) {
				nodes[i].addr.addr4 = ((const struct sockaddr_in *)sa)->sin_addr;
			} else if (sa->sa_family == AF_INET6) {
				memcpy(&nodes[i].addr.addr6,
				       &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
			} else {
				err = -EINVAL;
				goto fail;
			}
			nodes[i].udp_port = nodes[i].tcp_port = servers[i].port ? servers[i].port
										: 53;
		}
		rc = ares_set_servers_ports(d->ch, nodes);
		if (rc != ARES_SUCCESS) {
			log_error("dns: c-ares servers: %s", ares_strerror(rc));
			err = rc == ARES_ENOMEM ? -ENOMEM : -EINVAL;
			goto fail;
		}
	}
	free(nodes);
	nodes = NULL;

	/* libuv's handle inits only fill in the struct, but a result is a
	 * result: a timer that was made must go through uv_close before d may
	 * be freed, so a failed idle init frees d from the close callback. */
	rc = uv_timer_init(loop, &d->timer);
	if (rc != 0) {
		log_error("dns: uv_timer_init: %s", uv_strerror(rc));
		err = rc;
		goto fail;
	}
	d->timer.data = d;
	d->open_handles = 1;
	rc = uv_idle_init(loop, &d->idle);
	if (rc != 0) {
		log_error("dns: uv_idle_init: %s", uv_strerror(rc));
		ares_destroy(d->ch);
		d->ch = NULL;
		d->closing = true;
		uv_close((uv_handle_t *)&d->timer, on_handle_closed);
		return rc;
	}
	d->idle.data = d;
	d->open_handles = 2;
	*out = d;
	return 0;
fail:
	free(nodes);
	if (d->ch != NULL)
		ares_destroy(d->ch);
	if (lib)
		ares_library_cleanup();
	free(d);
	return err;
}

/* Ends every lookup (DNS_CANCELLED to its callback), closes every handle;
 * d itself is freed by the last close callback. */
static void teardown(struct dns *d)
{
	struct dns_query *q;

	d->free_pending = false;
	/* Stop watching first: c-ares closes its sockets in ares_destroy. */
	while (d->socks != NULL)
		sock_close(d, d->socks);
	d->depth++;
	if (d->ch != NULL) {
		ares_channel ch = d->ch;
		/* Calls on_answer with ARES_EDESTRUCTION for every query still
		 * in flight, and the socket callback for every open socket. */
		ares_destroy(ch);
		d->ch = NULL;
	}
	q = d->deferred_head;
	d->deferred_head = d->deferred_tail = NULL;
	while (q != NULL) {
		struct dns_query *next = q->next_deferred;
		result_cancel(q);
		deliver(q);
		q = next;
	}
	d->depth--;
	uv_close((uv_handle_t *)&d->timer, on_handle_closed);
	uv_close((uv_handle_t *)&d->idle, on_handle_closed);
}

void dns_free(struct dns *dns)
{
	if (dns == NULL || dns->closing)
		return;
	dns->closing = true;
	if (dns->depth > 0) {
		dns->free_pending = true;
		return;
	}
	teardown(dns);
}
