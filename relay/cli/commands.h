/* The subcommands of the stsrelay binary; relay/cli/main.c dispatches on argv
 * (and on argv[0] for the sendmail and mailq links). Each returns an exit code. */
#ifndef STSRELAY_COMMANDS_H
#define STSRELAY_COMMANDS_H

/* argv[0] is the subcommand name ("serve", "queue", ...), options follow. */
int cmd_serve(int argc, char **argv);      /* relay/cli/serve.c */
int cmd_sendmail(int argc, char **argv);   /* relay/cli/sendmail.c; argv as sendmail(1) */
int cmd_mailq(int argc, char **argv);      /* relay/cli/queue_cmd.c: queue list */
int cmd_queue(int argc, char **argv);      /* relay/cli/queue_cmd.c */
int cmd_sts(int argc, char **argv);        /* relay/cli/sts_cmd.c */
int cmd_tlsrpt(int argc, char **argv);     /* relay/cli/tlsrpt_cmd.c */
int cmd_conf_check(int argc, char **argv); /* relay/cli/check_cmd.c: the configuration test */
int cmd_user(int argc, char **argv);       /* relay/cli/user_cmd.c: auth_users_file */

#endif
