"""cffi builder for embsqlite._native: the C extension compiled into a Python module.

The module carries the same SQL functions as the loadable extension (it includes
csrc/embsqlite.c), plus csrc/native.c: the entry points that bind them to the SQLite
library behind the standard sqlite3 module, and the top-k scan of the vector cache.
setup.py names this file in cffi_modules; its build_ext adds EMBSQLITE_VERSION. The
module uses only the stable ABI, so one build serves CPython 3.9 and later.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

ffibuilder = FFI()
ffibuilder.cdef(
    """
    typedef struct sqlite3 sqlite3;
    typedef struct sqlite3_api_routines sqlite3_api_routines;

    int sqlite3_embsqlite_init(sqlite3 *db, char **pzErrMsg,
                               const sqlite3_api_routines *pApi);
    int embsqlite_auto_init(sqlite3 *db, char **pzErrMsg,
                            const sqlite3_api_routines *pApi);
    int embsqlite_is_bound(void);
    int embsqlite_register_on(sqlite3 *db, const char *zFile);
    double embsqlite_cosine(const unsigned char *a, const unsigned char *b, int n);
    int embsqlite_all_finite(const unsigned char *a, long long n);
    long long embsqlite_sink_open(unsigned char *aOut, long long nRow, int nByte);
    long long embsqlite_sink_close(long long h);
    void embsqlite_norms(const unsigned char *matrix, long long nRow, int nDim,
                         double *aNorm2);
    long long embsqlite_sink_file(int fd, int nByte, long long iOff);
    long long embsqlite_scan(const unsigned char *matrix, const double *aNorm2,
                             long long nRow, int nDim, const unsigned char *query,
                             const long long *aPos, long long lo, long long hi,
                             long long skip, int k, int nThread, long long *aRow,
                             double *aScore, double *pOut);
    long long embsqlite_ties(const unsigned char *matrix, const double *aNorm2,
                             long long nRow, int nDim, const unsigned char *query,
                             const long long *aPos, long long lo, long long hi,
                             long long skip, double score, long long *aOut, long long nCap);
    long long embsqlite_positions(const long long *aRowid, long long nRow,
                                  const long long *aWant, long long nWant, long long *aOut);
    long long embsqlite_topk(const unsigned char *matrix, const double *aNorm2,
                             long long nRow, int nDim,
                             const unsigned char *query, long long lo, long long hi,
                             long long skip, int k, long long *aRow, double *aScore);
    typedef struct RowidPos { long long rowid; long long row; } RowidPos;
    int embsqlite_rowid_index(RowidPos *aPair, long long nRow);
    long long embsqlite_subset_open(const RowidPos *aPair, long long nRow, unsigned char *aMark);
    long long embsqlite_subset_close(long long h);
    long long embsqlite_marked(const unsigned char *aMark, long long lo, long long hi,
                               long long *aOut);
    typedef struct SketchRow { double scale; double coded; double lost; double norm; } SketchRow;
    long long embsqlite_sketch_build(const unsigned char *matrix, const double *aNorm2,
                                     long long nRow, int nDim, signed char *aCode,
                                     SketchRow *aRow, int nThread);
    long long embsqlite_sketch_scan(const signed char *aCode, const SketchRow *aRow,
                                    const unsigned char *matrix, const double *aNorm2,
                                    long long nRow, int nDim, const unsigned char *query,
                                    const long long *aPos, long long lo, long long hi,
                                    long long skip, int k, int nThread, long long *aOut,
                                    double *aScore, double *pOut);
    """
)
ffibuilder.set_source(
    "embsqlite._native",
    '#include "embsqlite.c"\n#include "native.c"\n#include "sketch.c"\n',
    include_dirs=[HERE],  # embsqlite.c, native.c and the vendored SQLite headers
    depends=[os.path.join(HERE, "embsqlite.c"), os.path.join(HERE, "native.c"),
             os.path.join(HERE, "sketch.c"), os.path.join(HERE, "embsqlite_dot.h")],
    # Export nothing but PyInit: see EMBSQLITE_EXPORT in embsqlite.c.
    define_macros=[("EMBSQLITE_EXPORT", "")],
    extra_compile_args=["-O3", "-fvisibility=hidden"],
    py_limited_api=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
