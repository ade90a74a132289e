/* The SMTP listener: accepts clients on every `listen`, `submission_listen`
 * and `smtps_listen` address and runs one session state machine per client,
 * streaming DATA into the queue. */
#ifndef STSRELAY_SMTPD_H
#define STSRELAY_SMTPD_H

#include <stddef.h>

#include "relay/daemon/commit.h"
#include "relay/daemon/relay.h"

struct smtpd;

/* Command / DATA inactivity timeouts in seconds; the environment variable
 * STSRELAY_SMTPD_TIMEOUT (seconds) overrides both, for tests. */
#define SMTPD_CMD_TIMEOUT_S 300
#define SMTPD_DATA_TIMEOUT_S 600

/* Creates the listener sockets and binds every r->cfg.listen address (done
 * before dropping privileges). No connection is accepted yet. -1 with err
 * set on failure: *out is still set, its handles are closing; run the loop
 * to finish that, then smtpd_free(*out). */
int smtpd_bind(struct relay *r, struct smtpd **out, char *err, size_t errlen);

/* Loads what the submission listeners need, as the daemon's user: the
 * certificate (tls_cert_file, tls_key_file) and auth_users_file (missing:
 * a warning, nobody can authenticate). Nothing to do when both submission
 * keys are empty. 0, or -1 with err set (a certificate or key that does not
 * load or match, a users file with an error): a configuration error. */
int smtpd_submission_load(struct smtpd *sd, char *err, size_t errlen);

/* SIGHUP, after the configuration was swapped: reads the certificate, key
 * and auth_users_file again in the thread pool. What loads replaces the old
 * for new sessions and new AUTH commands; open sessions keep theirs; what
 * fails is logged and the old stays. */
void smtpd_reload(struct smtpd *sd);

/* Starts accepting; committed messages go through c and are announced to
 * r->sched. 0, or -1 with err set (a listen address in use). */
int smtpd_listen(struct smtpd *sd, struct commit *c, char *err, size_t errlen);

/* Graceful stop: closes the listeners, answers idle sessions with 421,
 * lets sessions in DATA finish (bounded by a grace timer) and calls done
 * once no session remains. */
void smtpd_stop(struct smtpd *sd, void (*done)(void *arg), void *arg);

/* Number of sessions alive (counted against max_sessions). */
size_t smtpd_sessions(const struct smtpd *sd);

/* Frees sd; only after smtpd_stop's done ran and the loop has run the
 * close callbacks. */
void smtpd_free(struct smtpd *sd);

#endif
