/* Bare-metal time source on cores without a CMSDK timer: SysTick, the Cortex-M core's own 24-bit
 * down-counter, on the processor clock (CLKSOURCE = 1).
 *
 * With TIMER_HZ (QEMU): QEMU clocks SysTick at the machine's CPU clock (32 MHz on mps3-an547,
 * 16 MHz on microbit) on QEMU_CLOCK_VIRTUAL, so under -icount shift=0 one tick = 31.25 (62.5) guest
 * instructions; plat_ns() spins to the next tick edge and subtracts the spin, as plat_mps2.c does,
 * and counts instructions. Without it (a real board): one tick is one CPU cycle, the unit cycles.
 *
 * 24 bits wrap every 2^24 ticks (0.5 s at 32 MHz), which one inference may exceed: the SysTick
 * interrupt and plat_ns() both count wraps through COUNTFLAG, which reading CSR clears, so each wrap
 * is counted once; plat_ns() reads the counter again after CSR and retries if it passed 0 meanwhile. */
#include "plat.h"
#include "plat_poll.h"

typedef struct { volatile uint32_t CSR, RVR, CVR, CALIB; } systick_t;
#define SYSTICK ((systick_t *)0xE000E010u)
#ifndef SYSTICK_MASK                      /* the reload: a smaller one (-DSYSTICK_MASK=0x3ffu) makes wraps */
#define SYSTICK_MASK 0x00ffffffu          /* frequent, which tests/test_mcu_cores.py counts against the full */
#endif                                    /* 24 bits. The counter runs MASK .. 0, COUNTFLAG set on reaching 0 */
#define COUNTFLAG (1u << 16)

#ifdef TIMER_HZ
const char *plat_unit = "insn";
#else
const char *plat_unit = "cycles";
#endif
const unsigned plat_res = 1;
static volatile uint64_t wrapped;         /* ticks of the periods completed */

static void count_wrap(void)
{
    if (SYSTICK->CSR & COUNTFLAG)         /* the read clears the flag */
        wrapped += SYSTICK_MASK + 1u;
}

void SysTick_Handler(void) { count_wrap(); }  /* replaces startup.c's weak default */

void plat_init(void)
{
    SYSTICK->CSR = 0;
    SYSTICK->RVR = SYSTICK_MASK;          /* period 2^24 ticks */
    SYSTICK->CVR = 0;                     /* any write clears the counter and COUNTFLAG */
    SYSTICK->CSR = 7;                     /* enable, interrupt on each wrap, processor clock */
}

uint64_t plat_ns(void)
{
    uint32_t polls = 0, v2;
    uint32_t v = plat_next_edge(&SYSTICK->CVR, &polls);
    uint64_t w;
    for (;;) {                            /* (v, w) consistent: no pass through 0 between the reads */
        count_wrap();
        w = wrapped;
        v2 = SYSTICK->CVR;
        if (v2 <= v && (v2 != 0 || v == 0))
            break;
        v = v2;
    }
    uint64_t ticks = w + ((0u - v) & SYSTICK_MASK);  /* 0 on reaching 0 (wrap counted), 1 after the reload */
#ifdef TIMER_HZ
    return plat_ticks_ns(ticks) - (uint64_t)polls * POLL_INSNS;
#else
    return ticks;
#endif
}
