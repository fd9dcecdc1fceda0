"""cffi builder for embsqlite._native: the C extension compiled into a Python module.

The module carries the same SQL functions as the loadable extension (it includes
csrc/embsqlite.c), plus small entry points that Python calls to bind them to the
SQLite library behind the standard sqlite3 module. setup.py names this file in
cffi_modules.
"""
import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

ffibuilder = FFI()
ffibuilder.cdef(
    """
    typedef struct sqlite3 sqlite3;
    typedef struct sqlite3_api_routines sqlite3_api_routines;

    int sqlite3_embsqlite_init(sqlite3 *db, char **pzErrMsg,
                               const sqlite3_api_routines *pApi);
    int embsqlite_is_bound(void);
    int embsqlite_register_on(sqlite3 *db);
    double embsqlite_cosine(const unsigned char *a, const unsigned char *b, int n);
    """
)
ffibuilder.set_source(
    "embsqlite._native",
    r"""
#include "embsqlite.c"

/* 1 once an auto-extension call has bound this copy to a SQLite library. */
static int embsqlite_is_bound(void){ return sqlite3_api!=0; }

/* Register the functions on an open connection of the bound library. */
static int embsqlite_register_on(sqlite3 *db){
  if( sqlite3_api==0 ) return SQLITE_MISUSE;
  return sqlite3_embsqlite_init(db, 0, sqlite3_api);
}

/* Cosine similarity of two float32 blobs of n values (no SQLite involved). */
static double embsqlite_cosine(
  const unsigned char *a, const unsigned char *b, int n
){
  double dot, n2a, n2b;
  float *q = (float*)calloc((size_t)(n>0?n:1), sizeof(float));
  int i;
  if( q==0 ) return NAN;
  for(i=0; i<n; i++) q[i] = load_f32(b+4*i);
  dot_and_norm2(a, q, n, &dot, &n2a);
  n2b = 0;
  for(i=0; i<n; i++) n2b += (double)q[i]*q[i];
  free(q);
  if( n2a==0.0 || n2b==0.0 ) return 0.0;
  return dot / (sqrt(n2a)*sqrt(n2b));
}
""",
    include_dirs=[HERE],
    extra_compile_args=[] if sys.platform == "win32" else ["-O3"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
