/* The life cycle of the relay daemon, `stsrelay serve` after its arguments:
 * start in order, run the loop, stop on a signal, reload on SIGHUP. */
#ifndef STSRELAY_LIFECYCLE_H
#define STSRELAY_LIFECYCLE_H

#include "relay/core/config.h"

/* Runs the daemon on cfg (loaded from config_path; copied, and replaced on
 * SIGHUP) until SIGTERM or SIGINT: logging as cfg says, the spool lock,
 * the listeners bound, `user` become (the spool handed over to it), the
 * spool opened and recovered, then scheduler, group commit, TLS-RPT,
 * maildrop pickup, control socket and listeners started. version goes into
 * the start line. Returns an exit code of <sysexits.h>, the reason logged:
 * 0 stopped by a signal; EX_SOFTWARE the queue could not be loaded;
 * EX_OSERR a listen address or another resource; EX_CANTCREAT the spool;
 * EX_TEMPFAIL another daemon holds the spool lock; EX_NOPERM `user`;
 * EX_CONFIG the TLS-RPT schedule. */
int lifecycle_run(const struct config *cfg, const char *config_path, const char *version);

#endif
