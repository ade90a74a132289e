/* The control socket server: one request line in, one reply line out, per
 * connection; bounded in size and time so a stuck client cannot pile up. */
#include "relay/control.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "queue/queue.h"
#include "relay/log.h"
#include "relay/scheduler.h"
#include "relay/tlsrpt_daemon.h"

struct control_conn;

struct control {
	struct relay *r;
	struct pickup *pickup;
	uv_pipe_t server;
	char path[CONFIG_PATH_MAX + 16];
	struct control_conn *conns;
	int server_open;
	size_t nopen;             /* server + connections not yet freed */
	int closing;
};

struct control_conn {
	struct control *c;
	struct control_conn *prev, *next;
	uv_pipe_t pipe;
	uv_timer_t timer;
	uv_write_t wreq;
	int handles_open;
	int done;                 /* replied or failed: input ignored */
	char in[CONTROL_REQUEST_MAX];
	size_t inlen;
	char reply[320];
};


void control_execute(struct relay *r, struct pickup *p, const char *req, char *reply,
		     size_t replylen)
{
	char verb[16], id[64];
	int n = 0, fields;

	fields = sscanf(req, "%15s %63s %n", verb, id, &n);
	if (fields < 1) {
		snprintf(reply, replylen, "error empty request");
		return;
	}
	if (fields == 2 && req[n] != '\0') {
		snprintf(reply, replylen, "error trailing text");
		return;
	}
	if (strcmp(verb, "tlsrpt-send") == 0 && fields == 2) {
		if (r->tlsrpt != NULL && tlsrpt_daemon_send_now(r->tlsrpt, id) == 0)
			snprintf(reply, replylen, "ok");
		else
			snprintf(reply, replylen, "error cannot start a TLS-RPT run for %s now", id);
		return;
	}
	if (fields == 2 && !queue_id_valid(id, strlen(id))) {
		snprintf(reply, replylen, "error bad queue id");
		return;
	}
	/* An unknown id gets one reply whatever the verb, so the queue
	 * commands can tell it from a failure (exit 67, not 70). */
	if (fields == 2 && (strcmp(verb, "flush") == 0 || strcmp(verb, "delete") == 0 ||
			    strcmp(verb, "bounce") == 0) && !scheduler_knows(r->sched, id)) {
		snprintf(reply, replylen, "error " RELAY_CONTROL_NO_SUCH " %s", id);
		return;
	}
	if (strcmp(verb, "wake") == 0 && fields == 1) {
		if (p != NULL)
			pickup_wake(p);
		snprintf(reply, replylen, "ok");
	} else if (strcmp(verb, "flush") == 0) {
		if (scheduler_flush(r->sched, fields == 2 ? id : NULL) == 0)
			snprintf(reply, replylen, "ok");
		else
			snprintf(reply, replylen, "error " RELAY_CONTROL_NO_SUCH " %s", id);
	} else if (strcmp(verb, "delete") == 0 && fields == 2) {
		if (scheduler_delete(r->sched, id) == 0)
			snprintf(reply, replylen, "ok");
		else
			snprintf(reply, replylen, "error cannot delete %s (spool error, see the log)", id);
	} else if (strcmp(verb, "queued") == 0 && fields == 2) {
		scheduler_add(r->sched, id);
		snprintf(reply, replylen, "ok");
	} else if (strcmp(verb, "bounce") == 0 && fields == 2) {
		if (scheduler_bounce(r->sched, id) == 0)
			snprintf(reply, replylen, "ok");
		else
			snprintf(reply, replylen,
				 "error cannot bounce %s (see the log)", id);
	} else {
		snprintf(reply, replylen, "error unknown request");
	}
}

static void on_conn_closed(uv_handle_t *h)
{
	struct control_conn *cc = h->data;
	struct control *c = cc->c;

	if (--cc->handles_open > 0)
		return;
	if (cc->prev)
		cc->prev->next = cc->next;
	else
		c->conns = cc->next;
	if (cc->next)
		cc->next->prev = cc->prev;
	free(cc);
	if (--c->nopen == 0)
		free(c);
}

static void conn_close(struct control_conn *cc)
{
	if (cc->handles_open != 2 || uv_is_closing((uv_handle_t *)&cc->pipe))
		return;
	uv_close((uv_handle_t *)&cc->pipe, on_conn_closed);
	uv_close((uv_handle_t *)&cc->timer, on_conn_closed);
}

static void on_written(uv_write_t *req, int status)
{
	(void)status;
	conn_close(req->data);
}

static void conn_reply(struct control_conn *cc)
{
	size_t n = strlen(cc->reply);
	uv_buf_t b;

	cc->done = 1;
	uv_read_stop((uv_stream_t *)&cc->pipe);
	if (n + 1 < sizeof(cc->reply)) {
		cc->reply[n++] = '\n';
		cc->reply[n] = '\0';
	}
	b = uv_buf_init(cc->reply, (unsigned)n);
	cc->wreq.data = cc;
	if (uv_write(&cc->wreq, (uv_stream_t *)&cc->pipe, &b, 1, on_written) != 0)
		conn_close(cc);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct control_conn *cc = h->data;

	(void)suggested;
	*buf = uv_buf_init(cc->in + cc->inlen, (unsigned)(sizeof(cc->in) - 1 - cc->inlen));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct control_conn *cc = st->data;
	char *nl;

	(void)buf;
	if (cc->done || nread == 0)
		return;
	if (nread < 0) {
		conn_close(cc);
		return;
	}
	cc->inlen += (size_t)nread;
	cc->in[cc->inlen] = '\0';
	nl = memchr(cc->in, '\n', cc->inlen);
	if (nl == NULL) {
		if (cc->inlen >= sizeof(cc->in) - 1) {
			snprintf(cc->reply, sizeof(cc->reply), "error request too long");
			conn_reply(cc);
		}
		return;
	}
	if (memchr(cc->in, '\0', (size_t)(nl - cc->in)) != NULL) {
		snprintf(cc->reply, sizeof(cc->reply), "error NUL in request");
	} else {
		*nl = '\0';
		if (nl > cc->in && nl[-1] == '\r')
			nl[-1] = '\0';
		log_info("control: %s", cc->in);
		control_execute(cc->c->r, cc->c->pickup, cc->in, cc->reply, sizeof(cc->reply));
	}
	conn_reply(cc);
}

static void on_timeout(uv_timer_t *t)
{
	conn_close(t->data);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct control *c = server->data;
	struct control_conn *cc;

	if (status != 0 || c->closing)
		return;
	cc = calloc(1, sizeof(*cc));
	if (cc == NULL)
		return;
	cc->c = c;
	cc->pipe.data = cc;
	cc->timer.data = cc;
	if (uv_pipe_init(c->r->loop, &cc->pipe, 0) != 0) {
		free(cc);
		return;
	}
	if (uv_timer_init(c->r->loop, &cc->timer) != 0) {
		cc->handles_open = 1;
		c->nopen++;
		cc->next = c->conns;
		if (c->conns)
			c->conns->prev = cc;
		c->conns = cc;
		uv_close((uv_handle_t *)&cc->pipe, on_conn_closed);
		return;
	}
	cc->handles_open = 2;
	c->nopen++;
	cc->next = c->conns;
	if (c->conns)
		c->conns->prev = cc;
	c->conns = cc;
	if (uv_accept(server, (uv_stream_t *)&cc->pipe) != 0 ||
	    uv_read_start((uv_stream_t *)&cc->pipe, on_alloc, on_read) != 0) {
		conn_close(cc);
		return;
	}
	uv_timer_start(&cc->timer, on_timeout, CONTROL_TIMEOUT_MS, 0);
}

static void on_server_closed(uv_handle_t *h)
{
	struct control *c = h->data;

	if (--c->nopen == 0)
		free(c);
}

int control_start(struct relay *r, struct pickup *p, struct control **out, char *err,
		  size_t errlen)
{
	struct control *c = calloc(1, sizeof(*c));
	struct sockaddr_un sun;
	mode_t old;
	int rc;

	if (c == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	c->r = r;
	c->pickup = p;
	snprintf(c->path, sizeof(c->path), "%s/%s", queue_spool_dir(r->queue), RELAY_CONTROL_SOCKET);
	if (strlen(c->path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "control socket path too long (%zu bytes, max %zu): %s",
			 strlen(c->path), sizeof(sun.sun_path) - 1, c->path);
		free(c);
		return -1;
	}
	rc = uv_pipe_init(r->loop, &c->server, 0);
	if (rc != 0) {
		snprintf(err, errlen, "control socket: %s", uv_strerror(rc));
		free(c);
		return -1;
	}
	c->server.data = c;
	c->server_open = 1;
	c->nopen = 1;
	(void)unlink(c->path);  /* stale socket of a previous run */
	old = umask(0177);      /* the socket is created 0600: root / spool owner only */
	rc = uv_pipe_bind(&c->server, c->path);
	umask(old);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&c->server, 16, on_connection);
	if (rc != 0) {
		snprintf(err, errlen, "control socket %s: %s", c->path, uv_strerror(rc));
		c->closing = 1;
		uv_close((uv_handle_t *)&c->server, on_server_closed);
		return -1;
	}
	if (chmod(c->path, 0600) != 0)
		log_warn("control socket %s: chmod failed", c->path);
	*out = c;
	return 0;
}

void control_close(struct control *c)
{
	struct control_conn *cc;

	c->closing = 1;
	(void)unlink(c->path);
	for (cc = c->conns; cc != NULL; cc = cc->next)
		conn_close(cc);
	if (c->server_open) {
		c->server_open = 0;
		uv_close((uv_handle_t *)&c->server, on_server_closed);
	}
}
