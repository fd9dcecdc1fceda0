/*
** fuzz_sql: a libFuzzer target for the embsqlite SQL functions.
**
** csrc/embsqlite.c is compiled with -DSQLITE_CORE and linked against the
** system libsqlite3; sqlite3_embsqlite_init() registers the functions on one
** in-memory connection, and every input is run as SQL through that real
** connection, with the arguments bound as parameters.
**
** Input format: a sequence of operations, read until the input runs out.
** Each operation is one byte (which statement to run, see aOp[] below)
** followed by its arguments; each argument is one byte choosing its kind
** (NULL, INTEGER, REAL, TEXT, BLOB, a repeated float, a zeroblob, JSON text
** built from floats, the empty blob, the empty text) followed by the bytes
** that kind consumes. fuzz/make_seeds.py writes inputs in this format.
**
** Besides the sanitizers, the target checks what the functions promise and
** aborts (a reported crash) when a promise breaks:
**   - NULL in gives NULL out; a non-blob or a blob whose length is not a
**     multiple of 4 gives an error; every error names its function;
**   - embedding_dimensions(A) is length(A)/4;
**   - cosine_similarity lies in [-1, 1], is symmetric to the bit, is exactly
**     1 for A with itself (0 for a zero vector), and the cached constant argument of a
**     multi-row statement gives exactly the result of a fresh call per row;
**   - embedding_from_json(embedding_to_json(A)) is A, byte for byte;
**   - embedding_from_json accepts no text holding a NUL character (no JSON
**     text does), and gives only finite values.
**
** Build (see fuzz/README.md):
**   clang -g -O1 -fsanitize=fuzzer,address,undefined \
**     -fno-sanitize-recover=undefined -DSQLITE_CORE -Icsrc \
**     fuzz/fuzz_sql.c csrc/embsqlite.c -lsqlite3 -lm -o fuzz/fuzz_sql
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>

int sqlite3_embsqlite_init(sqlite3*, char**, const void*);

/* Longest blob or text the connection accepts: small, so that the "too big"
** paths of embedding_to_json and embedding_from_json are reached by small
** inputs (a repeated float gives blobs of up to 262,140 bytes, whose JSON
** is longer still). Dimensions of a million are checked by
** tests/test_c_safety.py through the sqlite3 shell. */
#define FUZZ_MAX_LENGTH 100000

/* SQLite's heap limit: a few large arguments together pass it, so that the
** "out of memory" paths run too. */
#define FUZZ_HEAP_LIMIT (1024*1024)

#define FAIL(...) do{ \
  fprintf(stderr, "fuzz_sql: broken promise: " __VA_ARGS__); \
  fprintf(stderr, "\n"); abort(); \
}while(0)

/* ---- reading the input ------------------------------------------------ */

typedef struct Reader Reader;
struct Reader { const uint8_t *p; size_t n; };

/* Next byte, or 0 once the input is used up. */
static unsigned rd_byte(Reader *r){
  if( r->n==0 ) return 0;
  r->n--;
  return *r->p++;
}

/* Copy up to n bytes into out, zero-filling what the input lacks. */
static void rd_bytes(Reader *r, void *out, size_t n){
  size_t k = n<r->n ? n : r->n;
  memcpy(out, r->p, k);
  memset((char*)out+k, 0, n-k);
  r->p += k; r->n -= k;
}

/* A length: one byte, or when that byte is 255, two more (little-endian). */
static size_t rd_len(Reader *r){
  size_t n = rd_byte(r);
  if( n==255 ){ n = rd_byte(r); n |= (size_t)rd_byte(r)<<8; }
  return n;
}

/* A count that is usually small: one byte, or when that byte is 255, two
** more bytes (up to 65,535). */
static size_t rd_big_len(Reader *r){
  size_t n = rd_byte(r);
  if( n==255 ){ n = rd_byte(r); n |= (size_t)rd_byte(r)<<8; }
  return n;
}

/* ---- argument values -------------------------------------------------- */

enum { K_NULL, K_INT, K_REAL, K_TEXT, K_BLOB, K_REPEAT, K_ZERO, K_JSON,
       K_EMPTY_BLOB, K_EMPTY_TEXT, K_COUNT };

/* One argument: what it is as SQLite sees it, and how to bind it. */
typedef struct Value Value;
struct Value {
  int type;            /* SQLITE_NULL, _INTEGER, _FLOAT, _TEXT or _BLOB */
  sqlite3_int64 i;
  double d;
  const void *p;       /* TEXT or BLOB bytes (NULL for a zeroblob) */
  size_t n;            /* their length */
  void *owned;         /* malloc'd bytes behind p, freed by value_free() */
};

static void value_free(Value *v){ free(v->owned); memset(v, 0, sizeof(*v)); }

/* Append the formatted text to a malloc'd buffer; grows it as needed. */
typedef struct Buf Buf;
struct Buf { char *z; size_t n, cap; };
static void buf_append(Buf *b, const char *z, size_t n){
  if( b->n+n+1>b->cap ){
    b->cap = (b->n+n+1)*2;
    b->z = realloc(b->z, b->cap);
    if( b->z==0 ) abort();
  }
  memcpy(b->z+b->n, z, n);
  b->n += n;
  b->z[b->n] = 0;
}

/* JSON text made of floats from the input, in a chosen number format, with
** optional white space, a missing ']' or trailing junk. */
static void make_json(Reader *r, Value *v){
  static const char *azFmt[] = { "%.9g", "%.17g", "%e", "%.0f", "%g", "%.3f" };
  unsigned k = rd_byte(r);
  unsigned style = rd_byte(r);
  const char *zFmt = azFmt[style % 6];
  const char *zSep = (style & 8) ? " ,\n\t" : ",";
  Buf b = {0, 0, 0};
  char zNum[400];
  unsigned i;
  buf_append(&b, (style & 16) ? " [ " : "[", (style & 16) ? 3 : 1);
  for(i=0; i<k; i++){
    float f;
    rd_bytes(r, &f, 4);
    if( i ) buf_append(&b, zSep, strlen(zSep));
    snprintf(zNum, sizeof(zNum), zFmt, (double)f);
    buf_append(&b, zNum, strlen(zNum));
  }
  if( (style & 32)==0 ) buf_append(&b, "]", 1);
  if( style & 64 ){ char c = (char)rd_byte(r); buf_append(&b, &c, 1); }
  v->type = SQLITE_TEXT;
  v->p = v->owned = b.z;
  v->n = b.n;
}

/* Read one argument from the input. */
static void value_read(Reader *r, Value *v){
  unsigned kind = rd_byte(r) % K_COUNT;
  memset(v, 0, sizeof(*v));
  switch( kind ){
    case K_NULL: v->type = SQLITE_NULL; break;
    case K_INT:  v->type = SQLITE_INTEGER; rd_bytes(r, &v->i, 8); break;
    case K_REAL:
      rd_bytes(r, &v->d, 8);
      /* SQLite stores a bound NaN as NULL */
      v->type = isnan(v->d) ? SQLITE_NULL : SQLITE_FLOAT;
      break;
    case K_TEXT:
    case K_BLOB: {
      int isText = kind==K_TEXT;
      size_t n = rd_len(r);
      if( n>r->n ) n = r->n;
      v->type = isText ? SQLITE_TEXT : SQLITE_BLOB;
      v->p = r->p; v->n = n;
      r->p += n; r->n -= n;
      break;
    }
    case K_REPEAT: {       /* a float repeated 0 to 65,535 times */
      unsigned char a[4];
      size_t cnt, i;
      rd_bytes(r, a, 4);
      cnt = rd_big_len(r);
      v->type = SQLITE_BLOB;
      v->owned = malloc(cnt*4 + 1);
      if( v->owned==0 ) abort();
      /* doubling copies: few loop comparisons for the coverage tracer */
      if( cnt ) memcpy(v->owned, a, 4);
      for(i=1; i<cnt; i*=2){
        memcpy((char*)v->owned+4*i, v->owned, 4*(i<cnt-i ? i : cnt-i));
      }
      v->p = v->owned; v->n = cnt*4;
      break;
    }
    case K_ZERO: {         /* zeroblob of 0 to 65,535 bytes */
      size_t n = rd_big_len(r);
      v->type = SQLITE_BLOB; v->p = 0; v->n = n;
      break;
    }
    case K_JSON: make_json(r, v); break;
    case K_EMPTY_BLOB: v->type = SQLITE_BLOB; v->p = ""; v->n = 0; break;
    case K_EMPTY_TEXT: v->type = SQLITE_TEXT; v->p = ""; v->n = 0; break;
  }
}

/* Bind v to parameter i of pStmt; the bytes are copied. 0 on success. */
static int value_bind(sqlite3_stmt *pStmt, int i, const Value *v){
  switch( v->type ){
    case SQLITE_NULL:    return sqlite3_bind_null(pStmt, i);
    case SQLITE_INTEGER: return sqlite3_bind_int64(pStmt, i, v->i);
    case SQLITE_FLOAT:   return sqlite3_bind_double(pStmt, i, v->d);
    case SQLITE_TEXT:
      return sqlite3_bind_text64(pStmt, i, v->p, v->n, SQLITE_TRANSIENT,
                                 SQLITE_UTF8);
    default:
      if( v->p==0 ) return sqlite3_bind_zeroblob64(pStmt, i, v->n);
      return sqlite3_bind_blob64(pStmt, i, v->p, v->n, SQLITE_TRANSIENT);
  }
}

/* The value is a well-formed embedding argument: a blob of 4k bytes. */
static int is_embedding(const Value *v){
  return v->type==SQLITE_BLOB && v->n%4==0;
}

/* The bytes of v (a zeroblob becomes real zeros); caller frees. */
static unsigned char *value_bytes(const Value *v){
  unsigned char *a = calloc(v->n+1, 1);
  if( a==0 ) abort();
  if( v->p ) memcpy(a, v->p, v->n);
  return a;
}

/* The blob holds only finite float32 values. Not traced for coverage: its
** loop is the harness's, and tracing it would slow every long input. */
#if defined(__clang__) && __clang_major__>=13
__attribute__((no_sanitize("coverage")))
#endif
static int all_finite(const Value *v){
  size_t i;
  if( v->p==0 ) return 1;
  for(i=0; i+4<=v->n; i+=4){
    float f;
    memcpy(&f, (const char*)v->p+i, 4);
    if( !isfinite(f) ) return 0;
  }
  return 1;
}

/* ---- the connection and its statements -------------------------------- */

enum { S_COS, S_TOJSON, S_FROMJSON, S_DIMS, S_NORM,
       S_AUX_PLAIN, S_AUX_ORDER, S_AUX_NESTED, S_ROUNDTRIP, S_PAIR, S_COUNT };

static const char *azSql[S_COUNT] = {
  "SELECT cosine_similarity(?1, ?2)",
  "SELECT embedding_to_json(?1)",
  "SELECT embedding_from_json(?1)",
  "SELECT embedding_dimensions(?1)",
  "SELECT embedding_norm(?1)",
  /* a constant second argument over several rows: the auxdata path */
  "SELECT cosine_similarity(column1, ?1) FROM (VALUES (?2),(?3),(?4),(?5))",
  "SELECT column1, cosine_similarity(column1, ?1) AS s"
  " FROM (VALUES (?2),(?3),(?4),(?5)) ORDER BY s DESC",
  "SELECT cosine_similarity(column1,"
  " embedding_from_json(embedding_to_json(?1)))"
  " FROM (VALUES (?2),(?3),(?4),(?5))",
  "SELECT embedding_from_json(embedding_to_json(?1))",
  "SELECT cosine_similarity(?1, ?2), cosine_similarity(?2, ?1),"
  " cosine_similarity(?1, ?1), embedding_norm(?1)",
};

static sqlite3 *db;
static sqlite3_stmt *aStmt[S_COUNT];

/* The last error is SQLite's "too big" or "out of memory": a limit of the
** connection (FUZZ_MAX_LENGTH, FUZZ_HEAP_LIMIT) was reached, not bad input. */
static int is_limit_error(void){
  int rc = sqlite3_errcode(db) & 0xff;
  return rc==SQLITE_TOOBIG || rc==SQLITE_NOMEM;
}

/* An error message must name one of our functions (their "too big" and "out
** of memory" errors too), or be SQLite's own "too big" / "out of memory",
** met outside them. zFunc, when not NULL, is the one expected. */
static void check_error(const char *zFunc){
  static const char *azFunc[] = { "cosine_similarity:", "embedding_to_json:",
    "embedding_from_json:", "embedding_dimensions:", "embedding_norm:" };
  const char *zMsg = sqlite3_errmsg(db);
  unsigned i;
  if( strcmp(zMsg, "string or blob too big")==0
   || strcmp(zMsg, "out of memory")==0 ) return;
  if( zFunc ){
    if( strncmp(zMsg, zFunc, strlen(zFunc))==0 && zMsg[strlen(zFunc)]==':' ){
      return;
    }
    FAIL("error from %s does not name it: %s", zFunc, zMsg);
  }
  for(i=0; i<sizeof(azFunc)/sizeof(azFunc[0]); i++){
    if( strncmp(zMsg, azFunc[i], strlen(azFunc[i]))==0 ) return;
  }
  FAIL("error names no function: %s", zMsg);
}

/* Bind nArg values, step once. Returns SQLITE_ROW, SQLITE_DONE or
** SQLITE_ERROR (with the error checked), or -1 when binding failed (too
** big for the connection). */
static int run(int iStmt, const Value *aArg, int nArg, const char *zFunc){
  sqlite3_stmt *p = aStmt[iStmt];
  int i, rc;
  sqlite3_reset(p);
  sqlite3_clear_bindings(p);
  for(i=0; i<nArg; i++){
    if( value_bind(p, i+1, &aArg[i])!=SQLITE_OK ) return -1;
  }
  rc = sqlite3_step(p);
  if( rc!=SQLITE_ROW && rc!=SQLITE_DONE ){
    check_error(zFunc);
    return SQLITE_ERROR;
  }
  return rc;
}

/* A function of one embedding: NULL gives NULL, a non-embedding an error. */
static void check_one_arg_rule(int rc, const Value *v, const char *zFunc){
  if( rc<0 || v->type==SQLITE_NULL ) return;
  if( !is_embedding(v) && rc!=SQLITE_ERROR ){
    FAIL("%s accepted a %s of %zu bytes", zFunc,
         v->type==SQLITE_BLOB ? "blob" : "non-blob", v->n);
  }
}

/* Result column 0 of a statement that ran one of our functions on a NULL. */
static void check_null_result(int iStmt, int rc, const char *zFunc){
  if( rc<0 ) return;
  if( rc!=SQLITE_ROW || sqlite3_column_type(aStmt[iStmt], 0)!=SQLITE_NULL ){
    FAIL("%s: NULL in did not give NULL out", zFunc);
  }
}

/* A cosine similarity: finite and within [-1, 1] up to rounding. */
static void check_cosine(double r){
  if( !(fabs(r)<=1.0) ) FAIL("cosine_similarity gave %.17g", r);
}

static void op_cosine(const Value *a){
  int rc = run(S_COS, a, 2, "cosine_similarity");
  if( rc<0 ) return;
  if( a[0].type==SQLITE_NULL || a[1].type==SQLITE_NULL ){
    check_null_result(S_COS, rc, "cosine_similarity");
    return;
  }
  if( !is_embedding(&a[0]) || !is_embedding(&a[1]) || a[0].n!=a[1].n ){
    if( rc!=SQLITE_ERROR ) FAIL("cosine_similarity accepted bad arguments");
    return;
  }
  if( rc==SQLITE_ERROR ){
    if( all_finite(&a[0]) && all_finite(&a[1]) && !is_limit_error() ){
      FAIL("cosine_similarity failed on finite vectors: %s",
           sqlite3_errmsg(db));
    }
    return;
  }
  if( sqlite3_column_type(aStmt[S_COS], 0)!=SQLITE_FLOAT ){
    FAIL("cosine_similarity did not give a REAL");
  }
  check_cosine(sqlite3_column_double(aStmt[S_COS], 0));
}

static void op_to_json(const Value *a){
  int rc = run(S_TOJSON, a, 1, "embedding_to_json");
  check_one_arg_rule(rc, a, "embedding_to_json");
  if( rc<0 ) return;
  if( a->type==SQLITE_NULL ){
    check_null_result(S_TOJSON, rc, "embedding_to_json");
  }else if( is_embedding(a) && all_finite(a) && rc==SQLITE_ERROR
         && !is_limit_error() ){
    FAIL("embedding_to_json failed on a finite blob: %s", sqlite3_errmsg(db));
  }
}

static void op_from_json(const Value *a){
  int rc = run(S_FROMJSON, a, 1, "embedding_from_json");
  if( rc<0 ) return;
  if( a->type==SQLITE_NULL ){
    check_null_result(S_FROMJSON, rc, "embedding_from_json");
  }else if( a->type!=SQLITE_TEXT && rc!=SQLITE_ERROR ){
    FAIL("embedding_from_json accepted a non-TEXT argument");
  }else if( rc==SQLITE_ROW ){
    sqlite3_stmt *p = aStmt[S_FROMJSON];
    int n = sqlite3_column_bytes(p, 0);
    Value b;
    if( sqlite3_column_type(p, 0)!=SQLITE_BLOB || n%4 ){
      FAIL("embedding_from_json gave no float32 blob");
    }
    memset(&b, 0, sizeof(b));
    b.type = SQLITE_BLOB; b.p = sqlite3_column_blob(p, 0); b.n = n;
    if( !all_finite(&b) ) FAIL("embedding_from_json gave a non-finite value");
    if( a->n>0 && memchr(a->p, 0, a->n)!=0 ){
      FAIL("embedding_from_json accepted text holding a NUL character");
    }
  }
}

static void op_dimensions(const Value *a){
  int rc = run(S_DIMS, a, 1, "embedding_dimensions");
  check_one_arg_rule(rc, a, "embedding_dimensions");
  if( rc<0 ) return;
  if( a->type==SQLITE_NULL ){
    check_null_result(S_DIMS, rc, "embedding_dimensions");
  }else if( is_embedding(a) ){
    if( rc==SQLITE_ERROR && is_limit_error() ) return;
    if( rc!=SQLITE_ROW
     || sqlite3_column_int64(aStmt[S_DIMS], 0)!=(sqlite3_int64)(a->n/4) ){
      FAIL("embedding_dimensions of a %zu-byte blob is not %zu",
           a->n, a->n/4);
    }
  }
}

static void op_norm(const Value *a){
  int rc = run(S_NORM, a, 1, "embedding_norm");
  check_one_arg_rule(rc, a, "embedding_norm");
  if( rc<0 ) return;
  if( a->type==SQLITE_NULL ){
    check_null_result(S_NORM, rc, "embedding_norm");
  }else if( is_embedding(a) && all_finite(a) ){
    double r;
    if( rc==SQLITE_ERROR && is_limit_error() ) return;
    if( rc!=SQLITE_ROW ) FAIL("embedding_norm failed on a finite blob");
    r = sqlite3_column_double(aStmt[S_NORM], 0);
    if( !(r>=0.0) || !isfinite(r) ) FAIL("embedding_norm gave %g", r);
  }
}

/*
** A constant query (a[0]) over four rows (a[1..4]). For S_AUX_PLAIN every
** row must give exactly what a fresh cosine_similarity(row, query) gives.
*/
static void op_aux(int iStmt, const Value *a){
  sqlite3_stmt *p = aStmt[iStmt];
  int rc = run(iStmt, a, 5, 0);
  int iRow = 0;
  while( rc==SQLITE_ROW ){
    if( iStmt==S_AUX_PLAIN ){
      int t = sqlite3_column_type(p, 0);
      double r = sqlite3_column_double(p, 0);
      Value pair[2];
      int rc2;
      pair[0] = a[1+iRow];
      pair[1] = a[0];
      rc2 = run(S_COS, pair, 2, "cosine_similarity");
      if( rc2==SQLITE_ROW ){
        int t2 = sqlite3_column_type(aStmt[S_COS], 0);
        double r2 = sqlite3_column_double(aStmt[S_COS], 0);
        if( t!=t2 || memcmp(&r, &r2, sizeof(r))!=0 ){
          FAIL("row %d: cached query gave %g, a fresh call %g", iRow, r, r2);
        }
      }else if( rc2==SQLITE_ERROR && !is_limit_error() ){
        FAIL("row %d: cached query gave a result, a fresh call an error: %s",
             iRow, sqlite3_errmsg(db));
      }
      iRow++;
    }else{
      int iCol = iStmt==S_AUX_ORDER ? 1 : 0;
      if( sqlite3_column_type(p, iCol)==SQLITE_FLOAT ){
        check_cosine(sqlite3_column_double(p, iCol));
      }
    }
    rc = sqlite3_step(p);
    if( rc!=SQLITE_ROW && rc!=SQLITE_DONE ){ check_error(0); break; }
  }
  if( iStmt==S_AUX_PLAIN && rc==SQLITE_ERROR && iRow<4 ){
    /* the row that failed must fail on its own as well */
    Value pair[2];
    pair[0] = a[1+iRow];
    pair[1] = a[0];
    if( !is_limit_error()
     && run(S_COS, pair, 2, "cosine_similarity")==SQLITE_ROW ){
      FAIL("row %d: cached query gave an error, a fresh call a result",
           iRow);
    }
  }
}

/* embedding_from_json(embedding_to_json(A)) is A for finite blobs. */
static void op_roundtrip(const Value *a){
  sqlite3_stmt *p = aStmt[S_ROUNDTRIP];
  int rc = run(S_ROUNDTRIP, a, 1, 0);
  if( rc!=SQLITE_ROW || !is_embedding(a) ) return;
  if( a->n==0 ){
    if( sqlite3_column_bytes(p, 0)!=0 ) FAIL("empty blob did not round-trip");
  }else{
    unsigned char *aIn = value_bytes(a);
    if( sqlite3_column_type(p, 0)!=SQLITE_BLOB
     || (size_t)sqlite3_column_bytes(p, 0)!=a->n
     || memcmp(sqlite3_column_blob(p, 0), aIn, a->n)!=0 ){
      FAIL("a %zu-byte blob did not round-trip through JSON", a->n);
    }
    free(aIn);
  }
}

/* Symmetry, self-similarity and the norm of two vectors. */
static void op_pair(const Value *a){
  sqlite3_stmt *p = aStmt[S_PAIR];
  int rc = run(S_PAIR, a, 2, 0);
  double ab, ba, aa, na;
  if( rc!=SQLITE_ROW ) return;
  if( sqlite3_column_type(p, 0)==SQLITE_NULL ) return;
  ab = sqlite3_column_double(p, 0);
  ba = sqlite3_column_double(p, 1);
  aa = sqlite3_column_double(p, 2);
  na = sqlite3_column_double(p, 3);
  check_cosine(ab);
  check_cosine(ba);
  if( memcmp(&ab, &ba, sizeof(ab))!=0 ){
    FAIL("cosine_similarity not symmetric: %.17g %.17g", ab, ba);
  }
  if( na==0.0 ? aa!=0.0 : aa!=1.0 ){
    FAIL("cosine_similarity(A, A) is %g for a vector of norm %g", aa, na);
  }
}

/* ---- libFuzzer entry points ------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv){
  int i;
  (void)argc; (void)argv;
  if( sqlite3_open(":memory:", &db)!=SQLITE_OK ) abort();
  if( sqlite3_embsqlite_init(db, 0, 0)!=SQLITE_OK ) abort();
  sqlite3_limit(db, SQLITE_LIMIT_LENGTH, FUZZ_MAX_LENGTH);
  sqlite3_hard_heap_limit64(FUZZ_HEAP_LIMIT);
  for(i=0; i<S_COUNT; i++){
    if( sqlite3_prepare_v2(db, azSql[i], -1, &aStmt[i], 0)!=SQLITE_OK ){
      fprintf(stderr, "fuzz_sql: cannot prepare %s: %s\n", azSql[i],
              sqlite3_errmsg(db));
      abort();
    }
  }
  /* the version function: a constant, non-empty TEXT */
  {
    sqlite3_stmt *p;
    if( sqlite3_prepare_v2(db, "SELECT embsqlite_version()", -1, &p, 0)
     || sqlite3_step(p)!=SQLITE_ROW || sqlite3_column_type(p, 0)!=SQLITE_TEXT
     || sqlite3_column_bytes(p, 0)==0 ){
      FAIL("embsqlite_version() gave no version");
    }
    sqlite3_finalize(p);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size){
  Reader r = { data, size };
  int nOp = 0;
  while( r.n>0 && nOp++<16 ){
    Value a[5];
    int i, nArg;
    unsigned op = rd_byte(&r) % 10;
    nArg = (op==0 || op==9) ? 2 : (op>=5 && op<=7) ? 5 : 1;
    for(i=0; i<nArg; i++) value_read(&r, &a[i]);
    switch( op ){
      case 0: op_cosine(a); break;
      case 1: op_to_json(a); break;
      case 2: op_from_json(a); break;
      case 3: op_dimensions(a); break;
      case 4: op_norm(a); break;
      case 5: op_aux(S_AUX_PLAIN, a); break;
      case 6: op_aux(S_AUX_ORDER, a); break;
      case 7: op_aux(S_AUX_NESTED, a); break;
      case 8: op_roundtrip(a); break;
      case 9: op_pair(a); break;
    }
    for(i=0; i<nArg; i++) value_free(&a[i]);
  }
  for(nOp=0; nOp<S_COUNT; nOp++){
    sqlite3_reset(aStmt[nOp]);
    sqlite3_clear_bindings(aStmt[nOp]);
  }
  return 0;
}
