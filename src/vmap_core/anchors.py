"""The two published measurements vmap_core is compared with, as published.

* ``SEED``: Wen Gu's reply to patch 04 of "Mitigate a vmap lock contention"
  (5 Jan 2024): nginx and ``wrk -c 1000 -t 96 -d 30`` over SMC loopback on a
  48-vCPU qemu guest, requests/s with the buffers vzalloc'ed (every copy to or
  from them does a hardened-usercopy lookup of its vmap area) or kzalloc'ed.
* ``COVER_LETTER``: the series' cover letter (v3, 2 Jan 2024), on an AMD
  Ryzen Threadripper 3970X (32 cores / 64 threads): ``time ./test_vmalloc.sh
  run_test_mask=7 nr_threads=64`` before and after the series, and the share
  of cycles in ``native_queued_spin_lock_slowpath`` (perf).

Also the sizes of the buffers the seed copied through: SMC's send buffer and
receive buffer (RMB) per socket, ``net.smc.wmem`` and ``net.smc.rmem``, 64 KiB
each by default (net/smc/smc_sysctl.c, ``net_smc_wmem_init`` /
``net_smc_rmem_init``; __smc_buf_create() starts from that size and rounds up
to 16 KiB << n, ``SMCR_RMBE_SIZES`` classes).

Nothing here is measured by vmap_core: these are the kernel developers' figures.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedRow:
    """One row of the seed's table: requests/s (and the second run's, where given)."""
    key: str                    # what vmap_core compares it with
    label: str
    requests_per_s: float
    second_run: float | None = None

    @property
    def ratio(self) -> float:
        """Requests/s over the no-lookup row's (hardened usercopy off)."""
        return self.requests_per_s / SEED_NOCHECK


SEED_NOCHECK = 805_164.78
SEED_CPUS = 48
SEED_SETUP = ("48-vCPU qemu guest, nginx + wrk -c 1000 -t 96 -d 30 over SMC loopback "
              "(Wen Gu, 5 Jan 2024)")
SEED = (
    SeedRow("6.8", "vzalloc, one vmap_area_lock (before the series)", 113_536.56),
    SeedRow("6.9/node", "vzalloc, per-node locks (with the series)", 583_729.93, 564_961.0),
    SeedRow("6.9/rwlock", "vzalloc, per-node rwlock (test patch)", 460_007.0, 442_534.0),
    SeedRow("nocheck", "vzalloc, hardened usercopy off (no lookup)", SEED_NOCHECK),
    SeedRow("kzalloc", "kzalloc'ed buffers (no lookup)", 831_950.39),
)
SEED_BY_KEY = {r.key: r for r in SEED}

#: SMC's per-socket buffers (net.smc.wmem, net.smc.rmem defaults) and the
#: seed's connections: each of wrk's 1000 connections has two SMC sockets on
#: this host (client and server end), each with a send buffer and an RMB.
SMC_SNDBUF = 64 << 10
SMC_RMB = 64 << 10
SEED_CONNECTIONS = 1000
SEED_BUFFERS = SEED_CONNECTIONS * 2 * 2
SEED_BUFFER_REASON = (
    f"{SEED_BUFFERS} buffers of 64 KiB: SMC gives each socket a send buffer and a "
    "receive buffer (RMB) of net.smc.wmem / net.smc.rmem, 64 KiB by default "
    "(net/smc/smc_sysctl.c), and wrk's 1000 connections have two sockets each on "
    "the one host; vzalloc adds a guard page, so each area is 68 KiB, 17 pages, "
    "and spans two 16-page zones")


@dataclass(frozen=True)
class CoverLetterRow:
    key: str
    label: str
    wall_s: float
    slowpath_share: float       # of cycles in native_queued_spin_lock_slowpath


COVER_LETTER_SETUP = ("AMD Ryzen Threadripper 3970X, 32 cores / 64 threads; "
                      "time ./test_vmalloc.sh run_test_mask=7 nr_threads=64 "
                      "(cover letter v3, 2 Jan 2024)")
COVER_LETTER_CPUS = 64
COVER_LETTER_THREADS = 64
COVER_LETTER = (
    CoverLetterRow("6.8/split", "v6.7-rc8, before the series", 651.271, 0.9307),
    CoverLetterRow("6.9/node", "with the series (merged for v6.9)", 51.301, 0.1651),
)
COVER_LETTER_BY_KEY = {r.key: r for r in COVER_LETTER}
COVER_LETTER_SPEEDUP = COVER_LETTER[0].wall_s / COVER_LETTER[1].wall_s


__all__ = ["COVER_LETTER", "COVER_LETTER_BY_KEY", "COVER_LETTER_CPUS", "COVER_LETTER_SETUP",
           "COVER_LETTER_SPEEDUP", "COVER_LETTER_THREADS", "CoverLetterRow", "SEED",
           "SEED_BUFFERS", "SEED_BUFFER_REASON", "SEED_BY_KEY", "SEED_CONNECTIONS",
           "SEED_CPUS", "SEED_NOCHECK", "SEED_SETUP", "SMC_RMB", "SMC_SNDBUF", "SeedRow"]
