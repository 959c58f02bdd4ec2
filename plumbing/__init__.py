"""Process plumbing shared by the supervisor and the workers.

Privilege dropping, signal flags, logging set-up, fd hand-over, the child
prologue, the system-call filter, the scheduler loop and the local clocks a
process reads. It imports core/ and ipc/ only; supervisor/ and workers/ both
build on it and never on each other's internals.
"""
