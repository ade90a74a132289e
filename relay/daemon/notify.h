/* Reports to the service manager (systemd's sd_notify protocol, Type=notify):
 * ready, reloading, stopping. Without $NOTIFY_SOCKET each call does nothing. */
#ifndef STSRELAY_NOTIFY_H
#define STSRELAY_NOTIFY_H

/* Listening, queue loaded: READY=1 with a STATUS= line for `systemctl status`. */
void notify_ready(const char *status);
/* SIGHUP seen: RELOADING=1 now, notify_ready() when the reload is done. */
void notify_reloading(void);
/* Shutdown has begun: STOPPING=1. */
void notify_stopping(void);

#endif
