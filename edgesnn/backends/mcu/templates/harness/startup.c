/* Minimal Cortex-M startup + semihosting exit. Stack pointer is loaded by the core from
 * vectors[0]; Reset_Handler copies .data, zeroes .bss, (optionally) enables the FPU. */
#include <stdint.h>
#include <string.h>

extern uint32_t __data_load__[], __data_start__[], __data_end__[];
extern uint32_t __bss_start__[], __bss_end__[], __stack_top[];
int main(void);
void initialise_monitor_handles(void);    /* librdimon: opens ":tt" for stdin/out/err */

/* ARM semihosting: r0 = op, r1 = arg block, trap with BKPT 0xAB on M-profile. */
static inline int semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

/* SYS_EXIT_EXTENDED (0x20) with ADP_Stopped_ApplicationExit: QEMU exits with `code`. */
__attribute__((noreturn)) void semihost_exit(int code)
{
    const uint32_t blk[2] = { 0x20026u, (uint32_t)code };
    for (;;) semihost(0x20, blk);
}

/* newlib's _exit would use plain SYS_EXIT (status lost on AArch32); override it. */
__attribute__((noreturn)) void _exit(int code) { semihost_exit(code); }

/* Any fault / unexpected exception: leave QEMU with status 128+exception number instead of hanging. */
void Default_Handler(void)
{
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    semihost_exit(128 + (int)(ipsr & 0x1ff));
}

__attribute__((noreturn)) void Reset_Handler(void)
{
    memcpy(__data_start__, __data_load__, (size_t)((char *)__data_end__ - (char *)__data_start__));
    memset(__bss_start__, 0, (size_t)((char *)__bss_end__ - (char *)__bss_start__));
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE) /* an FPU (-mfloat-abi=softfp/hard) or Helium (M55) */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;   /* CPACR: CP10/CP11 full access (MVE needs it too) */
    __asm__ volatile("dsb; isb");
#endif
    initialise_monitor_handles();
    semihost_exit(main());
}

/* plat_systick.c counts SysTick wraps; without it a SysTick exception is unexpected */
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

__attribute__((section(".vectors"), used))
void (*const vectors[16])(void) = {
    (void (*)(void))__stack_top, Reset_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler,   /* NMI HardFault MemManage BusFault */
    Default_Handler, Default_Handler, 0, 0, 0,                            /* UsageFault SecureFault(v8-M) */
    Default_Handler, Default_Handler, 0, Default_Handler, SysTick_Handler /* SVC DebugMon - PendSV SysTick */
};
