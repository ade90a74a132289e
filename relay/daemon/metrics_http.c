/* GET /metrics and /healthz: libmicrohttpd in external-polling mode, its
 * epoll descriptor and timeouts driven by the libuv loop; a periodic spool check. */
#include "relay/daemon/metrics_http.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue/queue.h"
#include "relay/core/log.h"
#include "relay/core/metrics.h"
#include "relay/daemon/scheduler.h"
#include "smtp/tls.h"
#include "sts/engine.h"

#define REQUEST_MEMORY 16384   /* a connection's request head and buffers */
#define MAX_CONNECTIONS 32     /* scrapers and health checkers at once */
#define IDLE_TIMEOUT_S 10      /* a connection that sends nothing */
#define METRICS_MAX (4u << 20) /* the largest /metrics document */
#define CHECK_EVERY_MS 5000    /* spool check interval */
#define CHECK_STALE_MS 30000   /* no check finished for this long: unhealthy */
#define WHY_MAX 512

struct metrics_http {
	struct relay *r;
	struct MHD_Daemon *mhd;
	uv_poll_t poll;                         /* libmicrohttpd's epoll descriptor */
	uv_timer_t timer;                       /* libmicrohttpd's next timeout */
	uv_timer_t check;                       /* the spool check */
	uv_work_t work;                         /* one spool check in the thread pool */
	bool poll_open, timer_open, check_open; /* handles not yet closed */
	bool work_busy;
	bool closing;
	/* the worker's result, read on the loop after it finished */
	int work_errno;
	char work_path[CONFIG_PATH_MAX + 32];
	/* the last finished check */
	bool checked, healthy;
	uint64_t checked_ms; /* uv_now() */
	char why[WHY_MAX];
};

/* ---- the spool check ---- */

/* Thread pool: create, write and remove one small file in the spool's
 * tmp/, the directory every accepted message passes through. */
static void check_work(uv_work_t *req)
{
	struct metrics_http *m = req->data;
	int fd, e = 0;

	fd = open(m->work_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		m->work_errno = errno;
		return;
	}
	if (write(fd, "ok\n", 3) != 3)
		e = errno != 0 ? errno : EIO;
	if (close(fd) != 0 && e == 0)
		e = errno;
	if (unlink(m->work_path) != 0 && e == 0)
		e = errno;
	m->work_errno = e;
}

static void maybe_free(struct metrics_http *m)
{
	if (m->closing && !m->poll_open && !m->timer_open && !m->check_open && !m->work_busy)
		free(m);
}

static void check_done(uv_work_t *req, int status)
{
	struct metrics_http *m = req->data;

	m->work_busy = false;
	if (m->closing) {
		maybe_free(m);
		return;
	}
	if (status != 0)
		return;
	m->checked_ms = uv_now(m->r->loop);
	if (m->work_errno == 0) {
		if (m->checked && !m->healthy)
			log_info("healthz: spool %s is writable again", m->r->cfg.spool_dir);
		m->checked = m->healthy = true;
		m->why[0] = '\0';
		return;
	}
	m->checked = true;
	if (m->healthy || m->why[0] == '\0')
		log_warn("healthz: spool %s is not writable: %s", m->r->cfg.spool_dir,
			 strerror(m->work_errno));
	m->healthy = false;
	snprintf(m->why, sizeof(m->why), "spool %s is not writable: %s", m->r->cfg.spool_dir,
		 strerror(m->work_errno));
}

static void on_check(uv_timer_t *t)
{
	struct metrics_http *m = t->data;

	if (m->work_busy)
		return; /* the last one still runs: the staleness rule notices */
	m->work.data = m;
	m->work_errno = 0;
	if (uv_queue_work(m->r->loop, &m->work, check_work, check_done) == 0)
		m->work_busy = true;
}

/* 0 and "ok", or the reason the node should get no new mail. */
static int health(struct metrics_http *m, char *why, size_t len)
{
	uint64_t age = uv_now(m->r->loop) - m->checked_ms;

	if (m->r->stopping) {
		snprintf(why, len, "stopping");
		return -1;
	}
	if (!m->checked) {
		snprintf(why, len, "starting: the spool was not checked yet");
		return -1;
	}
	if (!m->healthy) {
		snprintf(why, len, "%s", m->why);
		return -1;
	}
	if (age > CHECK_STALE_MS) {
		snprintf(why, len, "no spool check finished for %llu s (thread pool stuck?)",
			 (unsigned long long)(age / 1000));
		return -1;
	}
	snprintf(why, len, "ok");
	return 0;
}

/* ---- requests ---- */

/* The gauges are read from their owners at scrape time. */
static void collect(struct metrics_http *m)
{
	size_t msgs = 0, pending = 0, deferred = 0;

	if (m->r->sched != NULL)
		scheduler_counts(m->r->sched, &msgs, &pending, &deferred);
	metrics_set(METRICS_QUEUE_MESSAGES, NULL, (double)msgs);
	metrics_set(METRICS_QUEUE_RECIPIENTS, queue_status_name(QUEUE_PENDING), (double)pending);
	metrics_set(METRICS_QUEUE_RECIPIENTS, queue_status_name(QUEUE_DEFERRED), (double)deferred);
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned code, const char *ctype,
			       char *body, size_t len)
{
	struct MHD_Response *resp;
	enum MHD_Result rc;

	resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		free(body);
		return MHD_NO;
	}
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES ||
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
	    (code == MHD_HTTP_METHOD_NOT_ALLOWED &&
	     MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES)) {
		MHD_destroy_response(resp);
		return MHD_NO;
	}
	rc = MHD_queue_response(c, code, resp);
	MHD_destroy_response(resp);
	return rc;
}

static enum MHD_Result respond_text(struct MHD_Connection *c, unsigned code, const char *text)
{
	size_t n = strlen(text);
	char *body = malloc(n + 2);

	if (body == NULL)
		return MHD_NO;
	memcpy(body, text, n);
	body[n] = '\n';
	body[n + 1] = '\0';
	return respond(c, code, "text/plain; charset=utf-8", body, n + 1);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	struct metrics_http *m = cls;
	bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
		   strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	char why[WHY_MAX];

	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)con_cls;
	if (strcmp(url, "/metrics") != 0 && strcmp(url, "/healthz") != 0)
		return respond_text(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics or /healthz");
	/* Answered at once, before any body is read: nothing here takes one. */
	if (!get)
		return respond_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD");
	if (strcmp(url, "/healthz") == 0) {
		int h = health(m, why, sizeof(why));

		return respond_text(c, h == 0 ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, why);
	}
	{
		struct core_buf b = CORE_BUF_INIT(METRICS_MAX);
		size_t len = 0;
		char *text = NULL;

		collect(m);
		if (metrics_render(&b) == 0)
			text = core_buf_take(&b, &len);
		if (text == NULL) {
			core_buf_free(&b);
			log_error("metrics: cannot render the metrics (larger than %u bytes?)",
				  METRICS_MAX);
			return respond_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
					    "cannot render the metrics");
		}
		return respond(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text,
			       len);
	}
}

/* ---- driving libmicrohttpd from the loop ---- */

static void on_timer(uv_timer_t *t);

/* After every run: wake up again at libmicrohttpd's next timeout. */
static void rearm(struct metrics_http *m)
{
	MHD_UNSIGNED_LONG_LONG ms = 0;

	if (m->closing)
		return;
	if (MHD_get_timeout(m->mhd, &ms) == MHD_YES)
		uv_timer_start(&m->timer, on_timer, ms, 0);
	else
		uv_timer_stop(&m->timer);
}

static void run(struct metrics_http *m)
{
	if (m->closing)
		return;
	if (MHD_run(m->mhd) != MHD_YES)
		log_warn("metrics: libmicrohttpd run failed");
	rearm(m);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
	(void)status;
	(void)events;
	run(p->data);
}

static void on_timer(uv_timer_t *t)
{
	run(t->data);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	log_warn("metrics: %s", line);
}

static void on_closed(uv_handle_t *h)
{
	struct metrics_http *m = h->data;

	if (h == (uv_handle_t *)&m->poll)
		m->poll_open = false;
	else if (h == (uv_handle_t *)&m->timer)
		m->timer_open = false;
	else
		m->check_open = false;
	maybe_free(m);
}

/* Series that exist at 0 before their first event, so an alert on a rate
 * sees 0 rather than "no data"; the names come from their owners. */
static void preset_series(void)
{
	static const char *const statuses[] = { "sent", "deferred", "bounced" };
	static const char *const fetch_fail[] = { "sts-policy-fetch-error", "sts-policy-invalid",
						  "sts-webpki-invalid" };
	size_t i;

	metrics_preset(METRICS_ACCEPTED, METRICS_SOURCE_SMTP, NULL);
	metrics_preset(METRICS_ACCEPTED, METRICS_SOURCE_SUBMISSION, NULL);
	metrics_preset(METRICS_ACCEPTED, METRICS_SOURCE_SENDMAIL, NULL);
	for (i = 0; i < 3; i++) {
		metrics_preset(METRICS_DELIVERIES, statuses[i], NULL);
		metrics_preset(METRICS_POLICY_FETCHES, fetch_fail[i], NULL);
	}
	metrics_preset(METRICS_POLICY_FETCHES, "success", NULL);
	for (i = 0; i < SMTP_TLS_RESULT_COUNT; i++)
		metrics_preset(METRICS_TLS_SESSIONS, smtp_tls_result_name((enum smtp_tls_result)i),
			       NULL);
	for (i = STS_DECISION_ABSENT; i <= STS_DECISION_ENFORCE; i++)
		metrics_preset(METRICS_STS_DECISIONS, sts_decision_name((enum sts_decision)i),
			       NULL);
	metrics_preset(METRICS_TLSRPT_REPORTS, METRICS_TRANSPORT_MAILTO, "sent");
	metrics_preset(METRICS_TLSRPT_REPORTS, METRICS_TRANSPORT_HTTPS, "sent");
	metrics_set(METRICS_QUEUE_RECIPIENTS, queue_status_name(QUEUE_PENDING), 0);
	metrics_set(METRICS_QUEUE_RECIPIENTS, queue_status_name(QUEUE_DEFERRED), 0);
}

int metrics_http_start(struct relay *r, struct metrics_http **out, char *err, size_t errlen)
{
	const struct config_addr *a = &r->cfg.metrics_listen;
	const union MHD_DaemonInfo *info;
	struct metrics_http *m;
	unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	int rc;

	*out = NULL;
	if (a->port == 0)
		return 0;
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		snprintf(err, errlen, "metrics_listen: out of memory");
		return -1;
	}
	m->r = r;
	snprintf(m->work_path, sizeof(m->work_path), "%s/tmp/.healthz", r->cfg.spool_dir);
	if (a->sa.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* the logger first: libmicrohttpd logs with its own before it is set */
	m->mhd = MHD_start_daemon(
		flags, a->port, NULL, NULL, on_request, m, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
		m, MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&a->sa,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)REQUEST_MEMORY,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S, MHD_OPTION_END);
	if (m->mhd == NULL) {
		snprintf(err, errlen, "metrics_listen %s%s%s:%u: cannot listen (address in use?)",
			 a->sa.ss_family == AF_INET6 ? "[" : "", a->host,
			 a->sa.ss_family == AF_INET6 ? "]" : "", (unsigned)a->port);
		free(m);
		return -1;
	}
	info = MHD_get_daemon_info(m->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (info == NULL || (rc = uv_poll_init(r->loop, &m->poll, info->epoll_fd)) != 0) {
		snprintf(err, errlen, "metrics_listen: cannot watch libmicrohttpd's descriptor");
		MHD_stop_daemon(m->mhd);
		free(m);
		return -1;
	}
	m->poll.data = m;
	m->poll_open = true;
	m->timer_open = uv_timer_init(r->loop, &m->timer) == 0;
	m->timer.data = m;
	m->check_open = uv_timer_init(r->loop, &m->check) == 0;
	m->check.data = m;
	if (!m->timer_open || !m->check_open ||
	    uv_poll_start(&m->poll, UV_READABLE, on_poll) != 0 ||
	    uv_timer_start(&m->check, on_check, 0, CHECK_EVERY_MS) != 0) {
		snprintf(err, errlen, "metrics_listen: cannot start the loop handles");
		metrics_http_close(m);
		return -1;
	}
	preset_series();
	rearm(m);
	log_info("metrics: serving /metrics and /healthz on %s%s%s:%u",
		 a->sa.ss_family == AF_INET6 ? "[" : "", a->host,
		 a->sa.ss_family == AF_INET6 ? "]" : "", (unsigned)a->port);
	*out = m;
	return 0;
}

void metrics_http_close(struct metrics_http *m)
{
	if (m == NULL || m->closing)
		return;
	m->closing = true;
	/* the poll handle first: its descriptor closes with the daemon */
	if (m->poll_open)
		uv_close((uv_handle_t *)&m->poll, on_closed);
	if (m->timer_open)
		uv_close((uv_handle_t *)&m->timer, on_closed);
	if (m->check_open)
		uv_close((uv_handle_t *)&m->check, on_closed);
	MHD_stop_daemon(m->mhd);
	m->mhd = NULL;
	maybe_free(m);
}
