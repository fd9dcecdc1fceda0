/*
** sketch.c: the vector file's int8 sketch, a first pass that reads a quarter
** of the bytes of an exact scan and still returns its answer (compiled into
** the cffi module embsqlite._native after native.c, whose scan it uses).
**
**   embsqlite_sketch_build(matrix, aNorm2, nRow, nDim, aCode, aRow, nThread)
**                              write the sketch of each row of a float32 matrix
**   embsqlite_sketch_scan(...) embsqlite_scan()'s answer, to the bit, from the
**                              sketch and the float32 rows of a few candidates
**
** The sketch of a row x of nDim float32 values is nDim signed bytes c (x
** divided by a scale s = max|x|/127, rounded) and a SketchRow: s, the length
** s*|c| of the coded vector, an upper bound on the length |e| of what the
** codes lose (e = x - s*c, computed in double) and |x|. The query q is coded
** the same way (scale t, codes d, loss f = q - t*d). Then
**
**   q.x = s*t*(d.c) + s*(f.c) + q.e,   |s*(f.c)| <= |f|*s*|c|,  |q.e| <= |q|*|e|
**
** (Cauchy-Schwarz), so with the exact integer d.c each row's cosine lies in
** [lower, upper] = (s*t*(d.c) -+ (|f|*s*|c| + |q|*|e|)) / (|q|*|x|), widened by
** SKETCH_SLACK for the rounding of these few double operations. A row whose
** upper bound is below the k-th best lower bound cannot be among the best k,
** nor tie with the k-th; the others (the candidates, usually a few dozen) are
** scored exactly, from the float32 rows, by row_score(): the same bits as the
** full scan and as cosine_similarity(). Rows holding a NaN or an infinity have
** no sketch (s is NaN): they are always candidates, so their score is seen
** and reported as embsqlite_scan() reports it. A zero row scores exactly 0.
** When the sketch cannot help (a zero or non-finite query, a k of thousands,
** too many candidates, more dimensions than an int sum can hold) the scan is
** embsqlite_scan() itself.
*/

#include <float.h>

/* Per row of a sketch (32 bytes, after the codes in the vector file). */
typedef struct SketchRow SketchRow;
struct SketchRow {
  double scale;   /* s: max|x|/127; 0 for a zero row; NaN without a sketch */
  double coded;   /* s*|c| */
  double lost;    /* >= |x - s*c| */
  double norm;    /* |x|, sqrt of the squared norm of the file */
};

/* Cosine units added to both bounds: far above the rounding of their few
** double operations (relative 1e-15 of terms no larger than 1 + their bound). */
#define SKETCH_SLACK 1e-9
/* d.c sums at most nDim products of 127*127: an int holds 133,000 of them. */
#define SKETCH_MAX_DIM 100000
/* Candidates a share of a scan keeps before it drops those the k-th best
** lower bound has since ruled out; more than this after dropping: a full scan. */
#define SKETCH_CANDIDATES 65536

/* The int8 dot product of two coded vectors (exact: no rounding). */
static int dot_i8(const signed char *a, const signed char *b, int n){
  int s = 0, i;
  for(i=0; i<n; i++) s += (int)a[i]*(int)b[i];
  return s;
}

/*
** dot_i8() with AVX2's multiply-add of 16-bit pairs, which compilers do not
** find in the loop above (they widen to 32 bits first: half the speed), for
** CPUs that have it (checked at run time). Integer sums: the same result.
*/
#if defined(__GNUC__) && defined(__x86_64__) && !defined(EMBSQLITE_NO_MULTIVERSION)
#include <immintrin.h>
#define SKETCH_AVX2 1
__attribute__((target("avx2")))
static int dot_i8_avx2(const signed char *a, const signed char *b, int n){
  __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
  __m128i h;
  int i = 0, s;
  for(; i+32<=n; i+=32){
    __m256i a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(a+i)));
    __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(b+i)));
    __m256i a1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(a+i+16)));
    __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(b+i+16)));
    s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(a0, b0));
    s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(a1, b1));
  }
  s0 = _mm256_add_epi32(s0, s1);
  h = _mm_add_epi32(_mm256_castsi256_si128(s0), _mm256_extracti128_si256(s0, 1));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
  s = _mm_cvtsi128_si32(h);
  for(; i<n; i++) s += (int)a[i]*(int)b[i];
  return s;
}
#endif

/* The dot_i8 this CPU runs best. */
typedef int (*DotI8)(const signed char*, const signed char*, int);
static DotI8 dot_i8_best(void){
#ifdef SKETCH_AVX2
  if( __builtin_cpu_supports("avx2") ) return dot_i8_avx2;
#endif
  return dot_i8;
}

/*
** Code the n values of v with scale s = max|v|/127 into aCode; return s (0
** when v is zero, NaN when v is not finite) and set *pCoded to s*|c|, *pLost
** to an upper bound on |v - s*c|.
*/
EMBSQLITE_HOT static double sketch_code(
  const double *v, int n, signed char *aCode, double *pCoded, double *pLost
){
  double m = 0.0, z = 0.0, s, inv, cc = 0.0, ee = 0.0;
  int i;
  for(i=0; i<n; i++){
    double a = fabs(v[i]);
    m = a>m ? a : m;
    z += v[i]*0.0;                  /* NaN once any value is NaN or infinite */
  }
  if( z!=0.0 ) m = NAN;
  if( isnan(m) || m==0.0 ){         /* not finite, or a zero vector */
    if( n>0 ) memset(aCode, 0, (size_t)n);
    *pCoded = 0.0;
    *pLost = 0.0;
    return m==0.0 ? 0.0 : NAN;
  }
  s = m/127.0;
  inv = 127.0/m;
  for(i=0; i<n; i++){
    /* any rounding of v/s will do: the loss is measured with the codes chosen */
    double r = v[i]*inv, e;
    int c = (int)(r + (r<0 ? -0.5 : 0.5));
    c = c>127 ? 127 : c<-127 ? -127 : c;
    aCode[i] = (signed char)c;
    e = v[i] - s*c;
    cc += (double)c*c;
    ee += e*e;
  }
  *pCoded = s*sqrt(cc);
  /* the e[i] and their squares are rounded: 1e-12 relative covers it, and the
  ** tiny absolute term the underflow of squares of subnormal losses */
  *pLost = sqrt(ee)*(1.0+1e-12) + 1e-300;
  return s;
}

/* One share of a build: rows lo..hi-1. */
typedef struct SketchBuild SketchBuild;
struct SketchBuild {
  const unsigned char *matrix;
  const double *aNorm2;
  int nDim;
  signed char *aCode;
  SketchRow *aRow;
  long long lo, hi;
  long long nBad;     /* rows without a sketch, or -1 when out of memory */
};

static void *sketch_build_part(void *pArg){
  SketchBuild *b = (SketchBuild*)pArg;
  double *v = (double*)malloc(sizeof(double)*(size_t)(b->nDim>0 ? b->nDim : 1));
  long long i;
  int j;
  b->nBad = 0;
  if( v==0 ){ b->nBad = -1; return 0; }
  for(i=b->lo; i<b->hi; i++){
    const unsigned char *p = b->matrix + (size_t)i*b->nDim*4;
    SketchRow *r = &b->aRow[i];
    for(j=0; j<b->nDim; j++) v[j] = load_f32(p+4*j);
    r->scale = sketch_code(v, b->nDim, b->aCode + (size_t)i*b->nDim, &r->coded, &r->lost);
    r->norm = sqrt(b->aNorm2[i]);
    if( isnan(r->scale) || !(r->norm<=DBL_MAX) ){ r->scale = NAN; b->nBad++; }
  }
  free(v);
  return 0;
}

/*
** Write the sketch of each of the nRow rows of the row-major float32 matrix
** (squared norms aNorm2), on up to nThread threads: nDim codes per row to
** aCode, a SketchRow to aRow. Returns the number of rows without a sketch
** (not finite), or -1 when out of memory.
*/
static long long embsqlite_sketch_build(
  const unsigned char *matrix, const double *aNorm2, long long nRow, int nDim,
  signed char *aCode, SketchRow *aRow, int nThread
){
  SketchBuild aPart[SCAN_MAX_THREADS];
  long long nBad = 0;
  int nPart = scan_shares(nThread, nRow), i;
  for(i=0; i<nPart; i++){
    SketchBuild *b = &aPart[i];
    b->matrix = matrix; b->aNorm2 = aNorm2; b->nDim = nDim;
    b->aCode = aCode; b->aRow = aRow;
    b->lo = nRow*i/nPart;
    b->hi = nRow*(i+1)/nPart;
  }
  run_shares(sketch_build_part, aPart, sizeof(aPart[0]), nPart);
  for(i=0; i<nPart; i++){
    if( aPart[i].nBad<0 ) return -1;
    nBad += aPart[i].nBad;
  }
  return nBad;
}

/* A row that may be among the best: its number and its upper bound. */
typedef struct Candidate Candidate;
struct Candidate {
  long long row;
  double upper;
};

/* The coded query, shared by the shares of a scan. */
typedef struct SketchQuery SketchQuery;
struct SketchQuery {
  signed char *aCode;
  DotI8 xDot;         /* dot_i8_best() */
  double scale;       /* t */
  double lost;        /* |f| */
  double norm;        /* |q| */
};

/* One share of a sketch scan: rows lo..hi-1 (or aPos[lo..hi-1]) but `skip`. */
typedef struct SketchPart SketchPart;
struct SketchPart {
  const signed char *aCode;
  const SketchRow *aRow;
  long long nRow;
  int nDim;
  const SketchQuery *q;
  const long long *aPos;
  long long lo, hi, skip;
  int k;
  double *aLow;        /* min-heap of the best k lower bounds seen */
  int nLow;
  Candidate *aCand;
  long long nCand;
  int rc;              /* 0; 1 too many candidates; -2 a position out of range */
};

/* Restore the min-heap of doubles below i. */
static void low_down(double *a, int n, int i){
  for(;;){
    int l = 2*i+1, r = l+1, m = i;
    double t;
    if( l<n && a[l]<a[m] ) m = l;
    if( r<n && a[r]<a[m] ) m = r;
    if( m==i ) return;
    t = a[i]; a[i] = a[m]; a[m] = t;
    i = m;
  }
}

/* Offer a lower bound to the min-heap of the best k; the k-th best after. */
static double low_offer(double *a, int *pN, int k, double x){
  if( *pN<k ){
    int i = (*pN)++;
    a[i] = x;
    while( i>0 && a[(i-1)/2]>a[i] ){
      double t = a[i]; a[i] = a[(i-1)/2]; a[(i-1)/2] = t;
      i = (i-1)/2;
    }
  }else if( x>a[0] ){
    a[0] = x;
    low_down(a, k, 0);
  }
  return *pN<k ? -INFINITY : a[0];
}

/* Keep only the candidates whose upper bound reaches `bar`. */
static long long candidates_above(Candidate *a, long long n, double bar){
  long long i, m = 0;
  for(i=0; i<n; i++) if( a[i].upper>=bar ) a[m++] = a[i];
  return m;
}

static void *sketch_part(void *pArg){
  SketchPart *s = (SketchPart*)pArg;
  const SketchQuery *q = s->q;
  double bar = -INFINITY;
  long long j;
  s->nLow = 0;
  s->nCand = 0;
  for(j=s->lo; j<s->hi; j++){
    long long i = s->aPos ? s->aPos[j] : j;
    const SketchRow *r;
    double lower, upper;
    if( i<0 || i>=s->nRow ){ s->rc = -2; break; }
    if( i==s->skip ) continue;
    r = &s->aRow[i];
    if( r->scale>0.0 ){
      double denom = q->norm*r->norm;
      double dot = r->scale*q->scale*q->xDot(s->aCode + (size_t)i*s->nDim,
                                             q->aCode, s->nDim);
      double err = q->lost*r->coded + q->norm*r->lost;
      lower = (dot-err)/denom - SKETCH_SLACK;
      upper = (dot+err)/denom + SKETCH_SLACK;
      if( !(lower<=upper) ){          /* NaN, or a file edited in place: no sketch */
        lower = -INFINITY;
        upper = INFINITY;
      }
    }else if( r->scale==0.0 ){
      lower = upper = 0.0;             /* a zero row: cosine_of() gives 0.0 */
    }else{
      lower = -INFINITY;               /* no sketch: always scored exactly */
      upper = INFINITY;
    }
    bar = low_offer(s->aLow, &s->nLow, s->k, lower);
    if( upper<bar ) continue;
    if( s->nCand==SKETCH_CANDIDATES ){
      s->nCand = candidates_above(s->aCand, s->nCand, bar);
      if( s->nCand>SKETCH_CANDIDATES/2 ){ s->rc = 1; break; }
    }
    s->aCand[s->nCand].row = i;
    s->aCand[s->nCand].upper = upper;
    s->nCand++;
  }
  return 0;
}

/*
** Code the query (nDim float32 values at `query`) into *p; 0 on success, 1
** when the sketch cannot rank it (a zero or non-finite query), -1 when out of
** memory.
*/
static int sketch_query(SketchQuery *p, const QueryVec *v, int nDim){
  double *a = (double*)malloc(sizeof(double)*(size_t)nDim);
  double coded;
  int j;
  p->aCode = (signed char*)malloc((size_t)nDim);
  if( a==0 || p->aCode==0 ){ free(a); free(p->aCode); p->aCode = 0; return -1; }
  for(j=0; j<nDim; j++) a[j] = v->v[j];
  p->scale = sketch_code(a, nDim, p->aCode, &coded, &p->lost);
  p->norm = sqrt(v->norm2);
  p->xDot = dot_i8_best();
  free(a);
  return p->scale>0.0 && p->norm>0.0 && p->norm<=DBL_MAX ? 0 : 1;
}

/*
** embsqlite_scan() of the same rows, from the sketch (aCode, aRow of
** embsqlite_sketch_build) of the matrix: the same rows, scores and best score
** left out (among the candidates: every row left out that could tie with the
** k-th is one). Falls back to embsqlite_scan() where the sketch cannot help.
*/
static long long embsqlite_sketch_scan(
  const signed char *aCode, const SketchRow *aRow,
  const unsigned char *matrix, const double *aNorm2, long long nRow, int nDim,
  const unsigned char *query, const long long *aPos, long long lo, long long hi,
  long long skip, int k, int nThread, long long *aOut, double *aScore,
  double *pOut
){
  SketchQuery sq;
  SketchPart aPart[SCAN_MAX_THREADS];
  QueryVec *q = 0;
  double *aLow = 0, *aBar = 0, bar = -INFINITY, best_out = -INFINITY;
  Candidate *aCand = 0;
  Hit *aHeap = 0;
  long long n = hi-lo;
  int nPart, i, nHeap = 0, nLow = 0, rc = 0;
  if( pOut ) *pOut = -INFINITY;
  if( lo<0 || lo>hi || (aPos==0 && hi>nRow) || nDim<0 || k<0 ) return -2;
  if( k==0 || lo==hi ) return 0;
  if( aCode==0 || nDim==0 || nDim>SKETCH_MAX_DIM || k>SKETCH_CANDIDATES/4 ){
    return embsqlite_scan(matrix, aNorm2, nRow, nDim, query, aPos, lo, hi, skip,
                          k, nThread, aOut, aScore, pOut);
  }
  q = queryvec_malloc(query, nDim);
  if( q==0 ) return -1;
  rc = sketch_query(&sq, q, nDim);
  if( rc!=0 ){
    free(sq.aCode);
    free(q);
    if( rc<0 ) return -1;
    return embsqlite_scan(matrix, aNorm2, nRow, nDim, query, aPos, lo, hi, skip,
                          k, nThread, aOut, aScore, pOut);
  }
  nPart = scan_shares(nThread, n);
  aLow = (double*)malloc(sizeof(double)*(size_t)k*(size_t)nPart);
  aCand = (Candidate*)malloc(sizeof(Candidate)*SKETCH_CANDIDATES*(size_t)nPart);
  aBar = (double*)malloc(sizeof(double)*(size_t)k);
  aHeap = (Hit*)malloc(sizeof(Hit)*(size_t)k);
  if( aLow==0 || aCand==0 || aBar==0 || aHeap==0 ){ rc = -1; goto done; }
  for(i=0; i<nPart; i++){
    SketchPart *s = &aPart[i];
    s->aCode = aCode; s->aRow = aRow; s->nRow = nRow; s->nDim = nDim;
    s->q = &sq; s->aPos = aPos; s->skip = skip; s->k = k; s->rc = 0;
    s->lo = lo + n*i/nPart;
    s->hi = lo + n*(i+1)/nPart;
    s->aLow = aLow + (size_t)k*i;
    s->aCand = aCand + (size_t)SKETCH_CANDIDATES*i;
  }
  run_shares(sketch_part, aPart, sizeof(aPart[0]), nPart);
  for(i=0; i<nPart; i++) if( aPart[i].rc ) rc = aPart[i].rc;
  if( rc==1 ){
    rc = (int)embsqlite_scan(matrix, aNorm2, nRow, nDim, query, aPos, lo, hi,
                             skip, k, nThread, aOut, aScore, pOut);
    goto done;
  }
  if( rc ) goto done;
  /* The k-th best lower bound of all shares: every row of the best k, and
  ** every row tied with the k-th, has an upper bound at least this. */
  for(i=0; i<nPart; i++){
    int j;
    for(j=0; j<aPart[i].nLow; j++) bar = low_offer(aBar, &nLow, k, aPart[i].aLow[j]);
  }
  /* Score the candidates exactly, as scan_part() scores every row. */
  {
    ScanPart s;
    memset(&s, 0, sizeof(s));
    s.matrix = matrix; s.aNorm2 = aNorm2; s.nRow = nRow; s.nDim = nDim; s.q = q;
    for(i=0; i<nPart && rc==0; i++){
      long long j;
      for(j=0; j<aPart[i].nCand; j++){
        Hit h;
        if( aPart[i].aCand[j].upper<bar ) continue;
        h.row = aPart[i].aCand[j].row;
        h.score = row_score(&s, h.row);
        if( !isfinite(h.score) ){ rc = -2; break; }
        hit_offer(aHeap, &nHeap, k, h, &best_out);
      }
    }
  }
  if( rc==0 ){
    rc = hits_sorted(aHeap, nHeap, aOut, aScore);
    if( pOut ) *pOut = best_out;
  }
done:
  free(sq.aCode);
  free(q);
  free(aLow);
  free(aBar);
  free(aCand);
  free(aHeap);
  return rc;
}
