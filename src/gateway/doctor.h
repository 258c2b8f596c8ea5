/* doctor.h: `sandgate doctor`: what this host offers the local provider, and what to do about
 * what is missing (bubblewrap, namespaces, cgroup controllers, the rlimit fallback). */
#ifndef SANDGATE_GATEWAY_DOCTOR_H
#define SANDGATE_GATEWAY_DOCTOR_H

/* argv[0] is "doctor". Options: --json, --bwrap PATH. Exit status 0 when local sandboxes can
 * run here (bubblewrap works), 1 when they cannot, 2 on bad usage. */
int sg_gateway_doctor(int argc, char **argv);

#endif
