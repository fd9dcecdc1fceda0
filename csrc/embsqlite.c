/*
** embsqlite: SQL functions for embedding vectors stored as float32 blobs.
**
** An embedding is stored as a BLOB of little-endian IEEE-754 float32 values,
** the format of the `llm` package's embeddings database. This extension adds:
**
**   cosine_similarity(A, B)      -> REAL   cosine similarity of two embeddings
**   embedding_to_json(A)         -> TEXT   '[0.5,-1,2e3,...]' (shortest text)
**   embedding_from_json(J)       -> BLOB   JSON array of numbers -> float32 blob
**   embedding_dimensions(A)      -> INT    number of float32 values in A
**   embedding_norm(A)            -> REAL   L2 norm of A
**   embsqlite_version()          -> TEXT   version of this extension, e.g. '0.1.0'
**
** Input rules, the same for every function:
**   - a NULL argument gives NULL;
**   - an embedding argument must be a BLOB whose length is a multiple of 4;
**     anything else (TEXT, a number, a 7-byte blob) is an error;
**   - cosine_similarity needs two blobs of the same length;
**   - a NaN or infinite value, in a blob or in JSON, or a result that is not
**     finite, is an error;
**   - the zero vector (and the empty vector) has cosine similarity 0.0 with
**     every vector: it has no direction, and 0.0 ranks it below any vector
**     that points the same way as the query;
**   - embedding_from_json accepts only a JSON array of JSON numbers, each
**     finite as a float32; a number is read to the nearest double, then to
**     the nearest float32 (as Python's float and struct do);
**   - embedding_to_json writes each value with the fewest significant digits
**     that read back as that float32 that way, in positional or exponent
**     notation, whichever is shorter (positional on a tie): 0.1, 2e3, 1e-45.
** Errors are SQL errors whose message starts with the function's name; so
** are running out of memory (code SQLITE_NOMEM) and a result longer than the
** connection's SQLITE_LIMIT_LENGTH (code SQLITE_TOOBIG).
**
** Accuracy: the float32 products are exact in double precision and summed in
** double, so cosine_similarity agrees with a float64 reference computed from
** the same float32 values to about 1e-15 relative to |A||B|. It is symmetric
** to the bit (both norms are summed the same way), within [-1, 1], and 1.0
** exactly for a nonzero vector with itself (embsqlite_dot.h).
**
** Speed: in `ORDER BY cosine_similarity(embedding, :query)` the constant second
** argument is checked, decoded and normalised once per statement and kept with
** sqlite3_set_auxdata; each row then costs one pass over the row's blob.
** The inner loop keeps several independent accumulators so the compiler can
** vectorise it at -O3 without -ffast-math.
**
** The same source builds the loadable extension (`.load`, load_extension())
** and, compiled into the cffi module, the functions that embsqlite registers
** on Python's own sqlite3 connections.
*/
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT1
#include <assert.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "embsqlite_dot.h"

#ifndef EMBSQLITE_VERSION   /* setup.py passes embsqlite.__version__ */
# define EMBSQLITE_VERSION "unknown"
#endif

#ifndef SQLITE_INNOCUOUS
# define SQLITE_INNOCUOUS 0   /* older SQLite headers: the flag does not exist */
#endif

/*
** The entry points are the only symbols exported (the build uses
** -fvisibility=hidden): a process may hold this file and the cffi module at
** once, and neither may bind to the other's sqlite3_api. The cffi build
** defines EMBSQLITE_EXPORT empty, so nothing of it is exported.
*/
#ifndef EMBSQLITE_EXPORT
# ifdef _WIN32
#  define EMBSQLITE_EXPORT __declspec(dllexport)
# elif defined(__GNUC__)
#  define EMBSQLITE_EXPORT __attribute__((visibility("default")))
# else
#  define EMBSQLITE_EXPORT
# endif
#endif

static double json_number_value(const char *z, int n);

/*
** Doubles below this magnitude round to a finite float32 (it is FLT_MAX plus
** half a unit in the last place, 2^128 - 2^103); from it on they round to
** infinity.
*/
#define EMBSQLITE_F32_LIMIT 3.4028235677973366e38

/* Write f at p as little-endian float32. */
static void store_f32(unsigned char *p, float f){
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__==__ORDER_BIG_ENDIAN__
  unsigned char b[4];
  memcpy(b, &f, 4);
  p[0] = b[3]; p[1] = b[2]; p[2] = b[1]; p[3] = b[0];
#else
  memcpy(p, &f, 4);
#endif
}

/*
** Cosine similarity of float32 blob a with the float vector q whose squared
** norm is qNorm2. Zero vectors give 0.0. The result may be non-finite when
** the inputs hold NaN or infinity; the caller checks.
*/
static double cosine_with(
  const unsigned char *a, const float *q, double qNorm2, int n
){
  double dot, aNorm2;
  dot_and_norm2(a, q, n, &dot, &aNorm2);
  return cosine_of(dot, aNorm2, qNorm2);
}

/*
** A decoded query vector: the floats in native order, their squared norm.
** Kept as auxiliary data on a constant argument of cosine_similarity.
*/
typedef struct QueryVec QueryVec;
struct QueryVec {
  int n;           /* number of values */
  double norm2;    /* sum of squares, in double */
  float v[1];      /* n values (allocated to size) */
};

/*
** Report SQLITE_NOMEM or SQLITE_TOOBIG from zFunc with a message that names it,
** like every other error (SQLite's own helpers say only "out of memory" or
** "string or blob too big"). The message is built without allocating.
*/
static void error_code(sqlite3_context *ctx, const char *zFunc, int rc){
  char zMsg[200];
  if( rc==SQLITE_TOOBIG ){
    sqlite3_snprintf(sizeof(zMsg), zMsg,
        "%s: the result is too big: longer than this connection's length "
        "limit of %d bytes (SQLITE_LIMIT_LENGTH)", zFunc,
        sqlite3_limit(sqlite3_context_db_handle(ctx), SQLITE_LIMIT_LENGTH, -1));
  }else{
    sqlite3_snprintf(sizeof(zMsg), zMsg, "%s: out of memory", zFunc);
  }
  sqlite3_result_error(ctx, zMsg, -1);
  sqlite3_result_error_code(ctx, rc);
}

/* Report the error zMsg (from sqlite3_mprintf; freed here), or, when there
** was no memory to write it, that zFunc ran out of memory. */
static void error_message(sqlite3_context *ctx, const char *zFunc, char *zMsg){
  if( zMsg==0 ){ error_code(ctx, zFunc, SQLITE_NOMEM); return; }
  sqlite3_result_error(ctx, zMsg, -1);
  sqlite3_free(zMsg);
}

/*
** Fetch argument iArg of a function as an embedding blob. On success set
** *ppBlob and *pN (number of floats) and return 1. For NULL return 0 with
** nothing set. For anything else set an error on ctx and return -1.
*/
static int embedding_arg(
  sqlite3_context *ctx, const char *zFunc, sqlite3_value **argv, int iArg,
  const unsigned char **ppBlob, int *pN
){
  sqlite3_value *v = argv[iArg];
  int nByte;
  switch( sqlite3_value_type(v) ){
    case SQLITE_NULL:
      return 0;
    case SQLITE_BLOB:
      break;
    default: {
      error_message(ctx, zFunc, sqlite3_mprintf(
        "%s: argument %d must be a float32 BLOB, not %s", zFunc, iArg+1,
        sqlite3_value_type(v)==SQLITE_TEXT ? "TEXT" :
        sqlite3_value_type(v)==SQLITE_INTEGER ? "INTEGER" : "REAL"));
      return -1;
    }
  }
  nByte = sqlite3_value_bytes(v);
  if( nByte%4 ){
    error_message(ctx, zFunc, sqlite3_mprintf(
      "%s: argument %d is a %d-byte blob; a float32 embedding's length "
      "is a multiple of 4", zFunc, iArg+1, nByte));
    return -1;
  }
  *ppBlob = (const unsigned char*)sqlite3_value_blob(v);
  *pN = nByte/4;
  if( *ppBlob==0 && nByte>0 ){ error_code(ctx, zFunc, SQLITE_NOMEM); return -1; }
  return 1;
}

/* Report that zFunc met a NaN or infinity. */
static void error_not_finite(sqlite3_context *ctx, const char *zFunc){
  error_message(ctx, zFunc, sqlite3_mprintf(
      "%s: the result is not finite (an input holds NaN or infinity)", zFunc));
}

/* Bytes to allocate for a QueryVec of n values. */
static size_t queryvec_size(int n){
  return sizeof(QueryVec) + sizeof(float)*(size_t)(n>0 ? n : 1);
}

/*
** Decode the n float32 values at p into q, and sum their squares exactly as
** the other argument's are summed, so that the result is symmetric.
*/
static void queryvec_fill(QueryVec *q, const unsigned char *p, int n){
  int i;
  q->n = n;
  for(i=0; i<n; i++) q->v[i] = load_f32(p+4*i);
  q->norm2 = norm2_f32(p, n);
}

/* Decode n float32 values at p into a new QueryVec; NULL on OOM. */
static QueryVec *queryvec_new(const unsigned char *p, int n){
  QueryVec *q = sqlite3_malloc64(queryvec_size(n));
  if( q ) queryvec_fill(q, p, n);
  return q;
}

/*
** cosine_similarity(A, B): see the header. Argument 2 is decoded once and
** cached while it stays the same (a bound parameter or a literal).
*/
static void cosine_similarity_func(
  sqlite3_context *ctx, int argc, sqlite3_value **argv
){
  const unsigned char *a, *b;
  int na, nb, rc;
  double r;
  QueryVec *q;
  (void)argc;
  if( sqlite3_value_type(argv[0])==SQLITE_NULL
   || sqlite3_value_type(argv[1])==SQLITE_NULL ) return;
  rc = embedding_arg(ctx, "cosine_similarity", argv, 0, &a, &na);
  if( rc<=0 ) return;
  q = (QueryVec*)sqlite3_get_auxdata(ctx, 1);
  if( q==0 ){
    rc = embedding_arg(ctx, "cosine_similarity", argv, 1, &b, &nb);
    if( rc<=0 ) return;
    q = queryvec_new(b, nb);
    if( q==0 ){ error_code(ctx, "cosine_similarity", SQLITE_NOMEM); return; }
    sqlite3_set_auxdata(ctx, 1, q, sqlite3_free);
    q = (QueryVec*)sqlite3_get_auxdata(ctx, 1);
    if( q==0 ){ error_code(ctx, "cosine_similarity", SQLITE_NOMEM); return; }
  }
  if( q->n!=na ){
    error_message(ctx, "cosine_similarity", sqlite3_mprintf(
      "cosine_similarity: the vectors have different dimensions (%d and %d)",
      na, q->n));
    return;
  }
  r = cosine_with(a, q->v, q->norm2, na);
  if( !isfinite(r) ){ error_not_finite(ctx, "cosine_similarity"); return; }
  sqlite3_result_double(ctx, r);
}

/* embedding_dimensions(A): the number of float32 values in A. */
static void embedding_dimensions_func(
  sqlite3_context *ctx, int argc, sqlite3_value **argv
){
  const unsigned char *a;
  int n;
  (void)argc;
  if( embedding_arg(ctx, "embedding_dimensions", argv, 0, &a, &n)<=0 ) return;
  sqlite3_result_int(ctx, n);
}

/* embedding_norm(A): the L2 norm of A, summed in double. */
static void embedding_norm_func(
  sqlite3_context *ctx, int argc, sqlite3_value **argv
){
  const unsigned char *a;
  int n;
  double s;
  (void)argc;
  if( embedding_arg(ctx, "embedding_norm", argv, 0, &a, &n)<=0 ) return;
  s = sqrt(norm2_f32(a, n));
  if( !isfinite(s) ){ error_not_finite(ctx, "embedding_norm"); return; }
  sqlite3_result_double(ctx, s);
}

/*
** Significant digits enough to write any float32 exactly: 2^-149, the
** smallest, has 105.
*/
#define EMBSQLITE_F32_DIGITS 105

/*
** Write the decimal number 0.D * 10^(iExp+1), D being the nDig digits at zDig,
** as JSON text at zOut (room for EMBSQLITE_F32_DIGITS+48 bytes): in positional
** notation or as D.DDDeX, whichever is shorter (positional on a tie). Returns
** the length.
*/
static int format_digits(char *zOut, const char *zDig, int nDig, int iExp){
  int nPos, nSci, n = 0, i, e;
  char zExp[16];
  int nExp = snprintf(zExp, sizeof(zExp), "%d", iExp);
  if( iExp>=nDig-1 ) nPos = iExp+1;
  else if( iExp>=0 ) nPos = nDig+1;
  else nPos = 1 - iExp + nDig;
  nSci = nDig + (nDig>1) + 1 + nExp;
  if( nPos<=nSci ){
    if( iExp>=nDig-1 ){
      memcpy(zOut, zDig, nDig); n = nDig;
      for(i=nDig; i<=iExp; i++) zOut[n++] = '0';
    }else if( iExp>=0 ){
      memcpy(zOut, zDig, iExp+1); n = iExp+1;
      zOut[n++] = '.';
      memcpy(zOut+n, zDig+iExp+1, nDig-iExp-1); n += nDig-iExp-1;
    }else{
      zOut[n++] = '0'; zOut[n++] = '.';
      for(e=-1; e>iExp; e--) zOut[n++] = '0';
      memcpy(zOut+n, zDig, nDig); n += nDig;
    }
  }else{
    zOut[n++] = zDig[0];
    if( nDig>1 ){
      zOut[n++] = '.';
      memcpy(zOut+n, zDig+1, nDig-1); n += nDig-1;
    }
    zOut[n++] = 'e';
    memcpy(zOut+n, zExp, nExp); n += nExp;
  }
  zOut[n] = 0;
  return n;
}

/*
** 1 if the decimal 0.D * 10^(iExp+1) (nDig digits at zDig) reads back, as
** embedding_from_json reads it (to the nearest double, then to the nearest
** float32), as the positive float32 f.
*/
static int digits_read_back(const char *zDig, int nDig, int iExp, float f){
  char zText[EMBSQLITE_F32_DIGITS+48];
  int n = format_digits(zText, zDig, nDig, iExp);
  double r = json_number_value(zText, n);
  return fabs(r)<EMBSQLITE_F32_LIMIT && (float)r==f;
}

/*
** Append the shortest JSON number that reads back as the finite float32 f:
** the fewest significant digits that do (the nearest to f of those when two
** do; the even one on an exact tie), then the shorter of positional and
** exponent notation. f's exact decimal expansion comes from the C library's
** printf, which writes exact digits (glibc, macOS); each candidate of p
** digits is f's expansion cut to p digits, or that plus one in the last
** digit, as no other p-digit decimal is nearer to f on either side.
*/
static void append_f32(sqlite3_str *pStr, float f){
  char zExact[EMBSQLITE_F32_DIGITS+32];
  char zDig[EMBSQLITE_F32_DIGITS+2], zUp[EMBSQLITE_F32_DIGITS+2];
  char zText[EMBSQLITE_F32_DIGITS+48];
  double aRest[EMBSQLITE_F32_DIGITS+1];
  double halfUlp, unit;
  const char *z;
  int nDig = 0, iExp, p, nUp, iUpExp, i, ex, nPrec;
  unsigned int m;
  if( f==0.0f ){
    sqlite3_str_appendall(pStr, signbit(f) ? "-0" : "0");
    return;
  }
  if( f<0 ){
    sqlite3_str_appendchar(pStr, 1, '-');
    f = -f;
  }
  /* f = m * 2^(ex-24): it has as many digits after the point as m's binary
  ** fraction has bits, k; so k + X digits after the first (X: the decimal
  ** exponent, estimated to one either way) are all of them. */
  m = (unsigned int)ldexp(frexp((double)f, &ex), 24);
  halfUlp = ldexp(1.0, (ex-24 < -149 ? -149 : ex-24) - 1);
  i = 24 - ex;
  while( i>0 && (m&1)==0 ){ m >>= 1; i--; }
  nPrec = i<=0 ? 39 : i + (int)floor(log10((double)f)) + 1;
  if( nPrec<0 ) nPrec = 0;
  if( nPrec>EMBSQLITE_F32_DIGITS-1 ) nPrec = EMBSQLITE_F32_DIGITS-1;
  /* The digits before 'e', skipping the decimal point of any locale. */
  snprintf(zExact, sizeof(zExact), "%.*e", nPrec, (double)f);
  for(z=zExact; *z && *z!='e'; z++){
    if( *z>='0' && *z<='9' && nDig<EMBSQLITE_F32_DIGITS ) zDig[nDig++] = *z;
  }
  iExp = *z=='e' ? atoi(z+1) : 0;
  while( nDig>1 && zDig[nDig-1]=='0' ) nDig--;
  /* aRest[p]: the digits from p on, as a fraction of one unit of digit p-1. */
  aRest[nDig] = 0.0;
  for(i=nDig-1; i>=0; i--) aRest[i] = (zDig[i]-'0' + aRest[i+1]) / 10.0;
  unit = pow(10.0, iExp+1);
  for(p=1; p<nDig; p++){
    int downOk, upOk;
    double rest = aRest[p];
    unit /= 10.0;   /* about 10^(iExp-p+1): one unit of the p-th digit */
    /* Neither candidate is within half an ulp (and a margin far above the
    ** rounding of these doubles) of f: neither can read back. */
    if( (rest<0.5 ? rest : 1.0-rest)*unit > halfUlp*1.0001 ) continue;
    /* zUp: the first p digits plus one unit in the last, with carry. */
    memcpy(zUp, zDig, p);
    nUp = p; iUpExp = iExp;
    for(i=p-1; i>=0 && zUp[i]=='9'; i--) zUp[i] = '0';
    if( i>=0 ){
      zUp[i]++;
    }else{
      zUp[0] = '1';   /* 99..9 + 1 = 10..0: one more power of ten */
      iUpExp++;
    }
    while( nUp>1 && zUp[nUp-1]=='0' ) nUp--;
    downOk = digits_read_back(zDig, p, iExp, f);
    upOk = digits_read_back(zUp, nUp, iUpExp, f);
    if( downOk && upOk ){
      /* Both read back: the nearer, by the digits cut off (a tie is exactly
      ** one '5'); on a tie the one whose last digit is even. */
      int up = zDig[p]>'5' || (zDig[p]=='5' && nDig>p+1)
            || (zDig[p]=='5' && nDig==p+1 && (zDig[p-1]-'0')%2==1);
      downOk = !up;
      upOk = up;
    }
    if( downOk ){ nDig = p; break; }
    if( upOk ){
      memcpy(zDig, zUp, nUp);
      nDig = nUp; iExp = iUpExp;
      break;
    }
  }
  /* p==nDig: all the digits, f's exact value, which always reads back. */
  format_digits(zText, zDig, nDig, iExp);
  sqlite3_str_appendall(pStr, zText);
}

/* embedding_to_json(A): A as a JSON array of numbers. */
static void embedding_to_json_func(
  sqlite3_context *ctx, int argc, sqlite3_value **argv
){
  const unsigned char *a;
  int n, i, rc;
  sqlite3_str *pStr;
  (void)argc;
  if( embedding_arg(ctx, "embedding_to_json", argv, 0, &a, &n)<=0 ) return;
  for(i=0; i<n; i++){
    if( !isfinite(load_f32(a+4*i)) ){
      sqlite3_result_error(ctx,
          "embedding_to_json: the blob holds NaN or infinity, "
          "which JSON cannot represent", -1);
      return;
    }
  }
  pStr = sqlite3_str_new(sqlite3_context_db_handle(ctx));
  sqlite3_str_appendchar(pStr, 1, '[');
  for(i=0; i<n; i++){
    if( i ) sqlite3_str_appendchar(pStr, 1, ',');
    append_f32(pStr, load_f32(a+4*i));
  }
  sqlite3_str_appendchar(pStr, 1, ']');
  rc = sqlite3_str_errcode(pStr);
  if( rc ){
    sqlite3_free(sqlite3_str_finish(pStr));
    error_code(ctx, "embedding_to_json", rc==SQLITE_NOMEM ? SQLITE_NOMEM : SQLITE_TOOBIG);
    return;
  }
  sqlite3_result_text(ctx, sqlite3_str_finish(pStr), -1, sqlite3_free);
}

/* Skip JSON white space. */
static const char *skip_ws(const char *z){
  while( *z==' ' || *z=='\t' || *z=='\n' || *z=='\r' ) z++;
  return z;
}

/*
** If z starts with a JSON number (RFC 8259 grammar), return the length of
** that number, else 0. strtod alone is too lax: it takes "nan", "inf", hex
** and leading '+'.
*/
static int json_number_len(const char *z){
  const char *p = z;
  if( *p=='-' ) p++;
  if( *p=='0' ){
    p++;
  }else if( *p>='1' && *p<='9' ){
    while( *p>='0' && *p<='9' ) p++;
  }else{
    return 0;
  }
  if( *p=='.' ){
    p++;
    if( !(*p>='0' && *p<='9') ) return 0;
    while( *p>='0' && *p<='9' ) p++;
  }
  if( *p=='e' || *p=='E' ){
    p++;
    if( *p=='+' || *p=='-' ) p++;
    if( !(*p>='0' && *p<='9') ) return 0;
    while( *p>='0' && *p<='9' ) p++;
  }
  return (int)(p-z);
}

/*
** Convert the JSON number z[0..n-1] to a double, whatever the C locale's
** decimal point is.
*/
static double json_number_value(const char *z, int n){
  char zBuf[64];
  char *zNum = n<(int)sizeof(zBuf) ? zBuf : sqlite3_malloc(n+1);
  char cDot = localeconv()->decimal_point[0];
  double r;
  int i;
  if( zNum==0 ) return NAN;
  memcpy(zNum, z, n);
  zNum[n] = 0;
  if( cDot!='.' ){
    for(i=0; i<n; i++) if( zNum[i]=='.' ) zNum[i] = cDot;
  }
  r = strtod(zNum, 0);
  if( zNum!=zBuf ) sqlite3_free(zNum);
  return r;
}

/* Report a JSON error for embedding_from_json at byte offset iOfst. */
static void json_error(sqlite3_context *ctx, const char *zWhat, int iOfst){
  error_message(ctx, "embedding_from_json", sqlite3_mprintf(
      "embedding_from_json: %s at character %d", zWhat, iOfst+1));
}

/* embedding_from_json(J): a JSON array of numbers as a float32 blob. */
static void embedding_from_json_func(
  sqlite3_context *ctx, int argc, sqlite3_value **argv
){
  const char *zJson, *z;
  unsigned char *aOut = 0;
  sqlite3_int64 nAlloc = 0, n = 0;
  sqlite3_int64 mxLen = sqlite3_limit(sqlite3_context_db_handle(ctx),
                                      SQLITE_LIMIT_LENGTH, -1);
  (void)argc;
  switch( sqlite3_value_type(argv[0]) ){
    case SQLITE_NULL: return;
    case SQLITE_TEXT: break;
    default:
      sqlite3_result_error(ctx,
          "embedding_from_json: the argument must be TEXT holding a JSON array",
          -1);
      return;
  }
  zJson = (const char*)sqlite3_value_text(argv[0]);
  if( zJson==0 ){ error_code(ctx, "embedding_from_json", SQLITE_NOMEM); return; }
  z = skip_ws(zJson);
  if( *z!='[' ){ json_error(ctx, "expected '['", (int)(z-zJson)); return; }
  z = skip_ws(z+1);
  if( *z!=']' ){
    for(;;){
      int len = json_number_len(z);
      double r;
      if( len==0 ){
        json_error(ctx, "expected a number", (int)(z-zJson));
        goto fail;
      }
      r = json_number_value(z, len);
      if( !(fabs(r)<EMBSQLITE_F32_LIMIT) ){
        json_error(ctx, "number is not a finite float32", (int)(z-zJson));
        goto fail;
      }
      if( (n+1)*4>mxLen ){
        error_code(ctx, "embedding_from_json", SQLITE_TOOBIG);
        goto fail;
      }
      if( n==nAlloc ){
        unsigned char *aNew;
        nAlloc = nAlloc ? nAlloc*2 : 64;
        aNew = sqlite3_realloc64(aOut, nAlloc*4);
        if( aNew==0 ){ error_code(ctx, "embedding_from_json", SQLITE_NOMEM); goto fail; }
        aOut = aNew;
      }
      store_f32(aOut+4*n, (float)r);
      n++;
      z = skip_ws(z+len);
      if( *z==']' ) break;
      if( *z!=',' ){
        json_error(ctx, "expected ',' or ']'", (int)(z-zJson));
        goto fail;
      }
      z = skip_ws(z+1);
    }
  }
  z = skip_ws(z+1);
  /* (z-zJson) short of the length: a NUL byte, then more text, follows */
  if( *z || (z-zJson)<sqlite3_value_bytes(argv[0]) ){
    json_error(ctx, "unexpected text after the array", (int)(z-zJson));
    goto fail;
  }
  if( n==0 ){
    sqlite3_result_zeroblob(ctx, 0);
    return;
  }
  sqlite3_result_blob64(ctx, aOut, (sqlite3_uint64)n*4, sqlite3_free);
  return;
fail:
  sqlite3_free(aOut);
}

/* embsqlite_version(): the version string of this extension. */
static void embsqlite_version_func(
  sqlite3_context *ctx, int argc, sqlite3_value **argv
){
  (void)argc; (void)argv;
  sqlite3_result_text(ctx, EMBSQLITE_VERSION, -1, SQLITE_STATIC);
}

/*
** Register every function on db. A copy of this extension binds to one
** SQLite library (the API table it was first loaded with); loading the same
** copy into a second, different SQLite library in one process would mix
** them up, so that is refused with an error instead.
*/
EMBSQLITE_EXPORT int sqlite3_embsqlite_init(
  sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi
){
  static const struct {
    const char *zName;
    int nArg;
    void (*xFunc)(sqlite3_context*, int, sqlite3_value**);
  } aFunc[] = {
    { "cosine_similarity",    2, cosine_similarity_func },
    { "embedding_to_json",    1, embedding_to_json_func },
    { "embedding_from_json",  1, embedding_from_json_func },
    { "embedding_dimensions", 1, embedding_dimensions_func },
    { "embedding_norm",       1, embedding_norm_func },
    { "embsqlite_version",    0, embsqlite_version_func },
  };
  const int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;
  int rc = SQLITE_OK;
  unsigned int i;
#ifndef SQLITE_CORE
  if( pApi->libversion_number()<3025000 ){
    /* sqlite3_str_*() came in 3.25.0; an older library's API table is shorter */
    if( pzErrMsg ){
      *pzErrMsg = pApi->mprintf("embsqlite: needs SQLite 3.25.0 or later, not %s",
                                pApi->libversion());
    }
    return SQLITE_ERROR;
  }
  if( sqlite3_api!=0 && sqlite3_api!=pApi ){
    if( pzErrMsg ){
      *pzErrMsg = pApi->mprintf(
          "embsqlite: this copy of the extension is already in use by another "
          "SQLite library in this process; load it into one SQLite only");
    }
    return SQLITE_ERROR;
  }
#endif
  SQLITE_EXTENSION_INIT2(pApi);
  for(i=0; i<sizeof(aFunc)/sizeof(aFunc[0]) && rc==SQLITE_OK; i++){
    rc = sqlite3_create_function(db, aFunc[i].zName, aFunc[i].nArg, flags,
                                 0, aFunc[i].xFunc, 0, 0);
  }
  if( rc!=SQLITE_OK && pzErrMsg ){
    *pzErrMsg = sqlite3_mprintf("embsqlite: cannot register %s: %s",
                                aFunc[i-1].zName, sqlite3_errmsg(db));
  }
  return rc;
}

/* The generic entry point, for hosts that do not derive one from the name. */
EMBSQLITE_EXPORT int sqlite3_extension_init(
  sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi
){
  return sqlite3_embsqlite_init(db, pzErrMsg, pApi);
}
