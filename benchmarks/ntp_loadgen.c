/*
 * ntp_loadgen: closed-loop NTP request generator for benchmarks/server_throughput.py.
 *
 *   ntp_loadgen ADDRESS PORT SECONDS [SOCKETS [WINDOW [TEMPLATE [MIN_REPLY]]]]
 *
 * Loopback only: the address must be in 127.0.0.0/8 or ::1 (checked). Opens
 * SOCKETS UDP sockets (distinct source ports, so a SO_REUSEPORT group spreads
 * them over its members), keeps up to WINDOW requests in flight on each, and
 * refills the window as replies arrive, with sendmmsg/recvmmsg batches so that
 * the generator is not the bottleneck. A window that got no reply for 20 ms is
 * considered lost and refilled. Runs for SECONDS (the first 0.5 s is warm-up
 * and not counted) and prints one JSON line:
 *   {"sent": N, "replies": N, "kod": N, "bad": N, "seconds": S, "replies_per_s": R}
 * A reply counts if it is 48 bytes or more, mode 4, and echoes one of our
 * transmit timestamps as its origin; stratum 0 replies are counted as "kod".
 *
 * TEMPLATE (benchmarks/nts.py): a file holding one whole request (an NTS request, up to
 * 1100 bytes) sent as it is, every time: its transmit timestamp is authenticated, so it
 * cannot be stamped per request. Its transmit must carry MAGIC in its top 32 bits so
 * that replies are recognised the same way. MIN_REPLY: a reply shorter than this many
 * bytes (an NTS NAK, or a plain reply to an NTS request) counts as "bad", not as a reply.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SOCKETS 256
#define MAX_BATCH 64
#define PKT 48
#define MAX_TEMPLATE 1100
#define MAGIC 0x4e545042u /* "NTPB" in the origin's top 32 bits */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct lane {
    int fd;
    int inflight;
    double last_progress;
};

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s ADDRESS PORT SECONDS [SOCKETS [WINDOW]]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    double seconds = atof(argv[3]);
    int nsock = argc > 4 ? atoi(argv[4]) : 16;
    int window = argc > 5 ? atoi(argv[5]) : 32;
    static unsigned char template[MAX_TEMPLATE];
    size_t template_len = 0;
    if (argc > 6) {
        FILE *f = fopen(argv[6], "rb");
        if (!f) {
            perror("template");
            return 2;
        }
        template_len = fread(template, 1, sizeof template, f);
        fclose(f);
        if (template_len < PKT) {
            fprintf(stderr, "template shorter than %d bytes\n", PKT);
            return 2;
        }
    }
    unsigned min_reply = argc > 7 ? (unsigned)atoi(argv[7]) : PKT;
    if (nsock < 1 || nsock > MAX_SOCKETS || window < 1 || window > MAX_BATCH || seconds <= 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }

    struct sockaddr_storage ss;
    socklen_t sslen;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    int family;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        if ((ntohl(s4->sin_addr.s_addr) >> 24) != 127) {
            fprintf(stderr, "refusing non-loopback address %s\n", host);
            return 2;
        }
        family = AF_INET;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        sslen = sizeof *s4;
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr)) {
            fprintf(stderr, "refusing non-loopback address %s\n", host);
            return 2;
        }
        family = AF_INET6;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        sslen = sizeof *s6;
    } else {
        fprintf(stderr, "not an IP address: %s\n", host);
        return 2;
    }

    struct lane lanes[MAX_SOCKETS];
    struct pollfd pfds[MAX_SOCKETS];
    for (int i = 0; i < nsock; i++) {
        int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&ss, sslen) < 0) {
            perror("socket/connect");
            return 1;
        }
        int rcv = 1 << 21;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
        lanes[i].fd = fd;
        lanes[i].inflight = 0;
        lanes[i].last_progress = 0;
        pfds[i].fd = fd;
        pfds[i].events = POLLIN;
    }

    static unsigned char txbuf[MAX_BATCH][MAX_TEMPLATE];
    static unsigned char rxbuf[MAX_BATCH][2048];
    struct mmsghdr txmsg[MAX_BATCH], rxmsg[MAX_BATCH];
    struct iovec txiov[MAX_BATCH], rxiov[MAX_BATCH];
    for (int i = 0; i < MAX_BATCH; i++) {
        memset(txbuf[i], 0, PKT);
        txbuf[i][0] = (4 << 3) | 3; /* v4, client */
        if (template_len)
            memcpy(txbuf[i], template, template_len);
        txiov[i].iov_base = txbuf[i];
        txiov[i].iov_len = template_len ? template_len : PKT;
        memset(&txmsg[i], 0, sizeof txmsg[i]);
        txmsg[i].msg_hdr.msg_iov = &txiov[i];
        txmsg[i].msg_hdr.msg_iovlen = 1;
        rxiov[i].iov_base = rxbuf[i];
        rxiov[i].iov_len = sizeof rxbuf[i];
        memset(&rxmsg[i], 0, sizeof rxmsg[i]);
        rxmsg[i].msg_hdr.msg_iov = &rxiov[i];
        rxmsg[i].msg_hdr.msg_iovlen = 1;
    }

    uint32_t seq = 0;
    unsigned long long sent = 0, replies = 0, kod = 0, bad = 0;
    unsigned long long sent0 = 0, replies0 = 0, kod0 = 0, bad0 = 0;
    double start = now_s(), warm = start + 0.5, end = warm + seconds;
    int counting = 0;
    double t = start;

    while (t < end) {
        for (int i = 0; i < nsock; i++) {
            struct lane *ln = &lanes[i];
            if (ln->inflight > 0 && t - ln->last_progress > 0.020)
                ln->inflight = 0; /* the window was lost: refill it */
            int want = window - ln->inflight;
            if (want <= 0)
                continue;
            for (int k = 0; k < want && !template_len; k++) {
                uint32_t be_magic = htonl(MAGIC), be_seq = htonl(seq++);
                memcpy(txbuf[k] + 40, &be_magic, 4);
                memcpy(txbuf[k] + 44, &be_seq, 4);
            }
            int n = sendmmsg(ln->fd, txmsg, want, 0);
            if (n > 0) {
                ln->inflight += n;
                sent += n;
                ln->last_progress = t;
            }
        }
        int ready = poll(pfds, nsock, 5);
        if (ready < 0 && errno != EINTR) {
            perror("poll");
            return 1;
        }
        for (int i = 0; i < nsock && ready > 0; i++) {
            if (!(pfds[i].revents & POLLIN))
                continue;
            for (;;) {
                int n = recvmmsg(lanes[i].fd, rxmsg, MAX_BATCH, MSG_DONTWAIT, NULL);
                if (n <= 0)
                    break;
                for (int k = 0; k < n; k++) {
                    unsigned char *p = rxbuf[k];
                    uint32_t magic;
                    memcpy(&magic, p + 24, 4);
                    if (rxmsg[k].msg_len >= PKT && rxmsg[k].msg_len >= min_reply && (p[0] & 7) == 4 && ntohl(magic) == MAGIC) {
                        replies++;
                        if (p[1] == 0)
                            kod++;
                    } else {
                        bad++;
                    }
                }
                lanes[i].inflight -= n;
                if (lanes[i].inflight < 0)
                    lanes[i].inflight = 0;
                lanes[i].last_progress = now_s();
                if (n < MAX_BATCH)
                    break;
            }
        }
        t = now_s();
        if (!counting && t >= warm) {
            counting = 1;
            sent0 = sent;
            replies0 = replies;
            kod0 = kod;
            bad0 = bad;
            warm = t;
        }
    }
    double elapsed = t - warm;
    unsigned long long r = replies - replies0;
    printf("{\"sent\": %llu, \"replies\": %llu, \"kod\": %llu, \"bad\": %llu, "
           "\"seconds\": %.3f, \"replies_per_s\": %.0f}\n",
           sent - sent0, r, kod - kod0, bad - bad0, elapsed, r / elapsed);
    return 0;
}
