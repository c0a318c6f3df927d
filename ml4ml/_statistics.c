/* ml4ml._statistics: the probe's eight layer statistics in one pass over a layer's output.
 *
 * layer_statistics(x, n, channels, spatial, out, n_threads=1), pointers given as integers
 * (torch.Tensor.data_ptr()) to C-contiguous float32 buffers:
 *   x    (n, channels, spatial)  a layer's output
 *   out  (n, 8)                  <- the statistics of each row in STATS order
 * STATS = mean, std, max, min over all values of a row; mean_max, mean_std of its
 * per-channel spatial means; max_mean, max_std of its per-channel spatial maxima (every std
 * the population one): what ml4ml.probe computes with ATen kernels, here in one read of the
 * layer's output. Each channel's values are re-read for the centred sum of squares while
 * they are in L1 (two-pass accuracy); the per-row combination is in double. A channel of
 * at least 16 values is reduced sixteen values at a time; shorter ones several channels
 * at a time. A NaN in a row makes its statistics NaN as torch's sum/amax/amin would; an
 * infinity makes mean/max/min infinite as in torch and the spreads NaN.
 *
 * Sixteen-lane float vectors (GCC/Clang vector extensions) with the order of every sum
 * fixed by the source, so results are the same on every instruction set; on x86-64 Linux
 * with GCC the kernels are compiled for AVX-512, AVX2 and the baseline and picked at load
 * time. The caller checks shapes, dtype and contiguity. Runs with the GIL released, on the
 * calling thread or, for outputs of PARALLEL_VALUES values or more, split by rows over
 * n_threads OpenMP threads: linked as libgomp.so.1 and imported after torch, the runtime is
 * torch's own, whose idle workers would otherwise spin against a single-threaded kernel.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define N_STATS 8
static const char *STAT_NAMES[N_STATS] = {"mean", "std", "max", "min",
                                          "mean_max", "mean_std", "max_mean", "max_std"};

typedef float vf __attribute__((vector_size(64)));
typedef int vi __attribute__((vector_size(64)));
#define LANES 16

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

/* lane-wise a > b ? a : b and a < b ? a : b (a NaN is caught through the sums) */
#define VMAX(a, b) ({ vi m_ = (a) > (b); (vf)((m_ & (vi)(a)) | (~m_ & (vi)(b))); })
#define VMIN(a, b) ({ vi m_ = (a) < (b); (vf)((m_ & (vi)(a)) | (~m_ & (vi)(b))); })
#define SMAX(a, b) ((a) > (b) ? (a) : (b))
#define SMIN(a, b) ((a) < (b) ? (a) : (b))
/* lane permutations i -> i xor 8, 4, 2, 1: folds (16 lanes to 1) and butterflies */
#define M8 ((vi){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7})
#define M4 ((vi){4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11})
#define M2 ((vi){2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13})
#define M1 ((vi){1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14})
#define STEP3(s, mx, mn, M) do { (s) += __builtin_shuffle((s), M); \
    (mx) = VMAX((mx), __builtin_shuffle((mx), M)); \
    (mn) = VMIN((mn), __builtin_shuffle((mn), M)); } while (0)
#define FOLD3(s, mx, mn) do { STEP3(s, mx, mn, M8); STEP3(s, mx, mn, M4); \
    STEP3(s, mx, mn, M2); STEP3(s, mx, mn, M1); } while (0)
#define FOLD(q) do { (q) += __builtin_shuffle((q), M8); (q) += __builtin_shuffle((q), M4); \
    (q) += __builtin_shuffle((q), M2); (q) += __builtin_shuffle((q), M1); } while (0)
#define FOLD_MIN(mn) do { (mn) = VMIN((mn), __builtin_shuffle((mn), M8)); \
    (mn) = VMIN((mn), __builtin_shuffle((mn), M4)); \
    (mn) = VMIN((mn), __builtin_shuffle((mn), M2)); \
    (mn) = VMIN((mn), __builtin_shuffle((mn), M1)); } while (0)

static int has_nan(const float *values, long count)
{
    for (long k = 0; k < count; k++)
        if (isnan(values[k]))
            return 1;
    return 0;
}

/* The eight statistics of one row from its channels' sums and maxima, its min and the
 * sum of squares of its values about their channel's mean. */
static void finish_row(const float *sums, const float *maxes, long channels, long spatial,
                       float row_min, double centred_squares, int nan_row, float *out)
{
    double mean_sum = 0.0, max_sum = 0.0, mean_top = -INFINITY, top = -INFINITY;
    for (long c = 0; c < channels; c++) {
        double m = (double)sums[c] / spatial;
        mean_sum += m;
        max_sum += maxes[c];
        mean_top = SMAX(m, mean_top);
        top = SMAX((double)maxes[c], top);
    }
    double mean = mean_sum / channels, max_mean = max_sum / channels;
    double mean_spread = 0.0, max_spread = 0.0;
    for (long c = 0; c < channels; c++) {
        double dm = (double)sums[c] / spatial - mean, dx = (double)maxes[c] - max_mean;
        mean_spread += dm * dm;
        max_spread += dx * dx;
    }
    /* sum of squares about the row mean = within channels + spatial x between channels */
    double variance = (centred_squares + spatial * mean_spread) / ((double)channels * spatial);
    out[0] = (float)mean;
    out[1] = (float)sqrt(variance);
    out[2] = (float)top;
    out[3] = row_min;
    out[4] = (float)mean_top;
    out[5] = (float)sqrt(mean_spread / channels);
    out[6] = (float)max_mean;
    out[7] = (float)sqrt(max_spread / channels);
    if (nan_row)  /* a NaN value: NaN statistics, as torch's reductions give */
        for (int k = 0; k < N_STATS; k++)
            out[k] = NAN;
}

/* spatial >= LANES (or few channels): each channel's values, sixteen at a time */
CLONES static void statistics_by_channel(const float *x, long n, long channels, long spatial,
                                         float *sums, float *maxes, float *out)
{
    for (long i = 0; i < n; i++) {
        const float *xi = x + i * channels * spatial;
        float row_min = INFINITY;
        double squares = 0.0;
        for (long c = 0; c < channels; c++) {
            const float *row = xi + c * spatial;
            vf v, s = {0}, mx = s - INFINITY, mn = s + INFINITY;
            long k = 0;
            for (; k + LANES <= spatial; k += LANES) {
                memcpy(&v, row + k, sizeof v);
                s += v;
                mx = VMAX(v, mx);
                mn = VMIN(v, mn);
            }
            FOLD3(s, mx, mn);
            float sum = s[0], top = mx[0], bottom = mn[0];
            for (; k < spatial; k++) {
                sum += row[k];
                top = SMAX(row[k], top);
                bottom = SMIN(row[k], bottom);
            }
            float mean = sum / (float)spatial;
            vf q = {0}, centre = q + mean;
            for (k = 0; k + LANES <= spatial; k += LANES) {
                memcpy(&v, row + k, sizeof v);
                vf d = v - centre;
                q += d * d;
            }
            FOLD(q);
            float square = q[0];
            for (; k < spatial; k++) {
                float d = row[k] - mean;
                square += d * d;
            }
            sums[c] = sum;
            maxes[c] = top;
            row_min = SMIN(bottom, row_min);
            squares += square;
        }
        int nan_row = isnan(squares) && has_nan(xi, channels * spatial);
        finish_row(sums, maxes, channels, spatial, row_min, squares, nan_row, out + i * N_STATS);
    }
}

/* spatial 1, 2, 4 or 8 and channels x spatial a multiple of 16: each vector holds
 * 16 / spatial whole channels, reduced within their lanes by butterflies (every lane of a
 * channel ends with its total, so centring needs no broadcast) */
CLONES static void statistics_packed(const float *x, long n, long channels, long spatial,
                                     float *sums, float *maxes, float *out)
{
    const long per_vector = LANES / spatial, n_vectors = channels * spatial / LANES;
    for (long i = 0; i < n; i++) {
        const float *xi = x + i * channels * spatial;
        vf v, q = {0}, row_min = q + INFINITY;
        for (long j = 0; j < n_vectors; j++) {
            memcpy(&v, xi + j * LANES, sizeof v);
            vf s = v, mx = v, mn = v;
            if (spatial >= 2) STEP3(s, mx, mn, M1);
            if (spatial >= 4) STEP3(s, mx, mn, M2);
            if (spatial >= 8) STEP3(s, mx, mn, M4);
            vf d = v - s / (float)spatial;
            q += d * d;
            row_min = VMIN(mn, row_min);
            for (long g = 0; g < per_vector; g++) {
                sums[j * per_vector + g] = s[g * spatial];
                maxes[j * per_vector + g] = mx[g * spatial];
            }
        }
        FOLD(q);
        FOLD_MIN(row_min);
        int nan_row = isnan(q[0]) && has_nan(xi, channels * spatial);
        finish_row(sums, maxes, channels, spatial, row_min[0], q[0], nan_row,
                   out + i * N_STATS);
    }
}

/* other spatial < LANES with channels >= LANES: each row's (channels, spatial) values are
 * transposed into t (spatial, channels) and sixteen channels reduced at a time */
CLONES static void statistics_transposed(const float *x, long n, long channels, long spatial,
                                         float *t, float *sums, float *maxes, float *out)
{
    for (long i = 0; i < n; i++) {
        const float *xi = x + i * channels * spatial;
        for (long c = 0; c < channels; c++)
            for (long k = 0; k < spatial; k++)
                t[k * channels + c] = xi[c * spatial + k];
        vf v, q = {0}, row_min = q + INFINITY;
        long c = 0;
        for (; c + LANES <= channels; c += LANES) {
            vf s = {0}, mx = s - INFINITY, mn = s + INFINITY;
            for (long k = 0; k < spatial; k++) {
                memcpy(&v, t + k * channels + c, sizeof v);
                s += v;
                mx = VMAX(v, mx);
                mn = VMIN(v, mn);
            }
            vf mean = s / (float)spatial;
            for (long k = 0; k < spatial; k++) {
                memcpy(&v, t + k * channels + c, sizeof v);
                vf d = v - mean;
                q += d * d;
            }
            row_min = VMIN(mn, row_min);
            memcpy(sums + c, &s, sizeof s);
            memcpy(maxes + c, &mx, sizeof mx);
        }
        FOLD(q);
        FOLD_MIN(row_min);
        float bottom = row_min[0];
        double squares = q[0];
        for (; c < channels; c++) {  /* the last channels, one at a time */
            const float *row = xi + c * spatial;
            float sum = 0.f, top = -INFINITY, square = 0.f;
            for (long k = 0; k < spatial; k++) {
                sum += row[k];
                top = SMAX(row[k], top);
                bottom = SMIN(row[k], bottom);
            }
            float mean = sum / (float)spatial;
            for (long k = 0; k < spatial; k++) {
                float d = row[k] - mean;
                square += d * d;
            }
            sums[c] = sum;
            maxes[c] = top;
            squares += square;
        }
        int nan_row = isnan(squares) && has_nan(xi, channels * spatial);
        finish_row(sums, maxes, channels, spatial, bottom, squares, nan_row, out + i * N_STATS);
    }
}

/* rows below this many values in all are reduced on the calling thread alone */
#define PARALLEL_VALUES (1L << 15)

typedef struct {
    const float *x;
    float *out, *buffer;
    long n, channels, spatial, scratch;
    int kind;  /* 0 by channel, 1 packed, 2 transposed */
} job_t;

/* rows [first, last) of the job, with this thread's scratch */
static void run_rows(const job_t *job, long first, long last, float *buffer)
{
    const long row = job->channels * job->spatial;
    const float *x = job->x + first * row;
    float *out = job->out + first * N_STATS, *sums = buffer, *maxes = buffer + job->channels;
    if (job->kind == 1)
        statistics_packed(x, last - first, job->channels, job->spatial, sums, maxes, out);
    else if (job->kind == 2)
        statistics_transposed(x, last - first, job->channels, job->spatial,
                              buffer + 2 * job->channels, sums, maxes, out);
    else
        statistics_by_channel(x, last - first, job->channels, job->spatial, sums, maxes, out);
}

static PyObject *layer_statistics(PyObject *self, PyObject *args)
{
    unsigned long long x, out;
    long long n, channels, spatial;
    int n_threads = 1;
    if (!PyArg_ParseTuple(args, "KLLLK|i", &x, &n, &channels, &spatial, &out, &n_threads))
        return NULL;
    if (n < 0 || channels < 1 || spatial < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "layer_statistics: expected n >= 0, channels >= 1 and spatial >= 1");
        return NULL;
    }
    job_t job = {(const float *)(uintptr_t)x, (float *)(uintptr_t)out, NULL, (long)n,
                 (long)channels, (long)spatial, 0, 0};
    const int packed = (spatial == 1 || spatial == 2 || spatial == 4 || spatial == 8)
                       && (channels * spatial) % LANES == 0;
    job.kind = packed ? 1 : (spatial < LANES && channels >= LANES) ? 2 : 0;
    /* per thread: a row's channel sums and maxima, then its transposed values */
    job.scratch = 2 * job.channels + (job.kind == 2 ? job.channels * job.spatial : 0);
#ifdef _OPENMP
    if (n_threads > n)
        n_threads = (int)n;
    if (n * channels * spatial < PARALLEL_VALUES || n_threads < 1)
        n_threads = 1;
#else
    n_threads = 1;
#endif
    job.buffer = PyMem_RawMalloc((size_t)(job.scratch * n_threads) * sizeof(float));
    if (job.buffer == NULL)
        return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    if (n_threads == 1) {
        run_rows(&job, 0, job.n, job.buffer);
    } else {
#ifdef _OPENMP
        /* the OpenMP runtime torch loaded (same soname), so its waiting workers take part */
#pragma omp parallel num_threads(n_threads)
        {
            const long t = omp_get_thread_num(), teams = omp_get_num_threads();
            run_rows(&job, job.n * t / teams, job.n * (t + 1) / teams,
                     job.buffer + t * job.scratch);
        }
#endif
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(job.buffer);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"layer_statistics", layer_statistics, METH_VARARGS,
     "layer_statistics(x, n, channels, spatial, out, n_threads=1): the eight statistics "
     "(STATS order) of each row of a C-contiguous float32 (n, channels, spatial) buffer, "
     "written into the C-contiguous float32 (n, 8) buffer ``out`` (data pointers as "
     "integers), on up to n_threads OpenMP threads."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_statistics",
    "The probe's eight layer statistics in one pass over a CPU layer output (ml4ml.probe).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__statistics(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *names = PyTuple_New(N_STATS);
    if (names == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    for (int k = 0; k < N_STATS; k++)
        PyTuple_SET_ITEM(names, k, PyUnicode_FromString(STAT_NAMES[k]));
    if (PyModule_AddObject(m, "STATS", names) < 0) {
        Py_DECREF(names);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
