/* LD_PRELOAD shim: make this process see a CPU without AVX-512 and AVX-VNNI (an AVX2 machine),
 * by CPUID faulting (arch_prctl ARCH_SET_CPUID 0) and emulating CPUID in the SIGSEGV handler
 * with those feature bits cleared. Needs the cpuid_fault CPU flag. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static int set_cpuid(int on) { return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, on); }

static void handler(int sig, siginfo_t* si, void* ctxv)
{
    ucontext_t* uc = (ucontext_t*)ctxv;
    greg_t* g = uc->uc_mcontext.gregs;
    const uint8_t* ip = (const uint8_t*)g[REG_RIP];
    if (!(ip[0] == 0x0f && ip[1] == 0xa2)) {   /* not CPUID: the default action */
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
        return;
    }
    uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX], a, b, c, d;
    set_cpuid(1);
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(sub));
    set_cpuid(0);
    if (leaf == 7 && sub == 0) {
        b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
               (1u << 30) | (1u << 31));                       /* AVX-512 F DQ IFMA PF ER CD BW VL */
        c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14)); /* VBMI VBMI2 VNNI BITALG VPOPCNTDQ */
        d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        a &= ~((1u << 4) | (1u << 5));                          /* AVX-VNNI, AVX512_BF16 */
    }
    g[REG_RAX] = a; g[REG_RBX] = b; g[REG_RCX] = c; g[REG_RDX] = d;
    g[REG_RIP] += 2;
    (void)sig; (void)si;
}

__attribute__((constructor)) static void init(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    set_cpuid(0);
}
