/* Portable inference harness: reads N x EDGESNN_INPUT_SIZE inputs (a model over sequences: N x
 * EDGESNN_STEPS frames, one output per step) (int8 or int16) from inputs.bin, writes
 * N x EDGESNN_OUTPUT_SIZE outputs (int8 or int16, little-endian) to outputs.bin, reports cost per inference on stdout and in
 * stats.txt. Same source for bare metal (stdio over semihosting via librdimon), host, aarch64. */
#include <stdio.h>
#include <stdint.h>
#include "model.h"
#include "plat.h"

static edgesnn_input_t in[EDGESNN_INPUT_SIZE];
static edgesnn_output_t out[EDGESNN_OUTPUT_SIZE];

int main(void)
{
    FILE *fi = fopen("inputs.bin", "rb");
    FILE *fo = fopen("outputs.bin", "wb");
    if (!fi || !fo) { printf("harness: cannot open inputs.bin/outputs.bin\n"); return 2; }

    plat_init();
    /* cost of the measurement itself (two timer reads), subtracted below */
    uint64_t ovh = UINT64_MAX;
    for (int k = 0; k < 8; k++) {
        uint64_t a = plat_ns(), b = plat_ns();
        if (b - a < ovh) ovh = b - a;
    }

    unsigned long n = 0;
    uint64_t sum = 0, mn = UINT64_MAX, mx = 0;
    int rc = 0;
#ifdef EDGESNN_STEPS
    /* a model over sequences: inputs.bin holds whole sequences of EDGESNN_STEPS frames; the state is
     * reset before each, and every step's output is written (the readout over T is the caller's).
     * The cost reported is per step. */
    unsigned long t = 0;
#endif
    while (fread(in, 1, sizeof in, fi) == sizeof in) {
#ifdef EDGESNN_STEPS
        if (t++ % EDGESNN_STEPS == 0)
            edgesnn_reset();
        uint64_t t0 = plat_ns();
        rc |= edgesnn_step(in, out);
#else
        uint64_t t0 = plat_ns();
        rc |= edgesnn_infer(in, out);
#endif
        uint64_t d = plat_ns() - t0;
        d = d > ovh ? d - ovh : 0;
        sum += d; if (d < mn) mn = d; if (d > mx) mx = d;
        if (fwrite(out, 1, sizeof out, fo) != sizeof out) { rc = 3; break; }
        n++;
    }
    fclose(fi);
    if (fclose(fo) != 0) rc = 3;
    if (n == 0) { printf("harness: no samples\n"); return 4; }

    char line[200];
    snprintf(line, sizeof line,
             "samples=%lu unit=%s res=%u min=%llu max=%llu mean=%llu total=%llu overhead=%llu rc=%d\n",
             n, plat_unit, plat_res, (unsigned long long)mn, (unsigned long long)mx,
             (unsigned long long)(sum / n), (unsigned long long)sum, (unsigned long long)ovh, rc);
    fputs(line, stdout);
    FILE *fs = fopen("stats.txt", "w");
    if (fs) { fputs(line, fs); fclose(fs); }
    return rc;
}
