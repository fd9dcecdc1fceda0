/*
** embsqlite_dot.h: the float32 loops whose results must agree to the bit
** wherever embsqlite computes a cosine similarity: the SQL function
** cosine_similarity() (embsqlite.c) and the vector cache's scan (native.c).
** Both files include this one header, so there is one definition of each:
**
**   load_f32(p)                    the little-endian float32 at p
**   norm2_f32(a, n)                sum of squares of the float32 blob a
**   dot_f32(a, q, n)               dot product of blob a with the floats q
**   dot_and_norm2(a, q, n, ...)    both in one pass over a
**   cosine_of(dot, na2, nb2)       the cosine from the three sums
**
** Rules that make the results exact and reproducible:
**   - a product of two floats is exact in double, so x*y == y*x and an FMA
**     gives the same bits as a multiply then an add;
**   - every sum has EMBSQLITE_LANES partial sums: value i goes to lane
**     i % LANES while a full block of LANES values remains, the tail goes
**     to lane 0, and the lanes are added pairwise (8, 4, 2, 1) at the end;
**     the compiler vectorises this without -ffast-math, and every loop
**     here uses that same order, so norm2_f32(a) is the norm2 of
**     dot_and_norm2(a, ...), and dot_f32(a, a) equals norm2_f32(a);
**   - cosine_of divides by sqrt(na2*nb2): the same expression whichever
**     argument comes first, and exactly 1.0 for a vector with itself
**     (sqrt(x*x) == x in IEEE arithmetic; na2*nb2 of float32 data can
**     neither overflow nor underflow a double), clamped to [-1, 1].
*/
#ifndef EMBSQLITE_DOT_H
#define EMBSQLITE_DOT_H

#include <math.h>
#include <string.h>

/*
** Read the little-endian float32 at p. memcpy keeps the load legal for blobs
** at any alignment; compilers turn it into a plain (vectorisable) load.
*/
static float load_f32(const unsigned char *p){
  float f;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__==__ORDER_BIG_ENDIAN__
  unsigned char b[4];
  b[0] = p[3]; b[1] = p[2]; b[2] = p[1]; b[3] = p[0];
  memcpy(&f, b, 4);
#else
  memcpy(&f, p, 4);
#endif
  return f;
}

/*
** On x86-64 glibc Linux with GCC 12 or later (target_clones needs ifunc, which
** musl lacks), compile the hot loops twice, for the
** baseline (SSE2) and for x86-64-v3 (AVX2, FMA), and let the loader pick one
** for the CPU it runs on. ("arch=haswell" would be refused by CPUs that lack
** one of Intel's extras, such as AMD's.) The products of two floats are exact
** in double, so both versions return the same bits.
*/
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__>=12 \
    && defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) \
    && !defined(EMBSQLITE_NO_MULTIVERSION)
# define EMBSQLITE_HOT \
    __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
# define EMBSQLITE_HOT
#endif

/* Independent partial sums per accumulation; 16 keeps AVX2's FMA units busy. */
#define EMBSQLITE_LANES 16

/*
** Dot product of the float32 blob a with the float vector q, and the squared
** norm of a, both over n values, summed in double in the lane order above.
*/
EMBSQLITE_HOT static void dot_and_norm2(
  const unsigned char *a, const float *q, int n,
  double *pDot, double *pNorm2
){
  double d[EMBSQLITE_LANES] = {0}, s[EMBSQLITE_LANES] = {0};
  int i = 0, k, w;
  /* Pointer steps, not a+4*(i+k): Python builds with -fwrapv, under which an
  ** int index may wrap, and GCC then stops vectorising (2x slower). */
  for(; i+EMBSQLITE_LANES<=n; i+=EMBSQLITE_LANES){
    const unsigned char *p = a + (size_t)i*4;
    const float *r = q + i;
    for(k=0; k<EMBSQLITE_LANES; k++){
      double x = load_f32(p+4*k);
      d[k] += x*r[k];
      s[k] += x*x;
    }
  }
  for(; i<n; i++){
    double x = load_f32(a+4*i);
    d[0] += x*q[i];
    s[0] += x*x;
  }
  for(w=EMBSQLITE_LANES/2; w>0; w/=2){
    for(k=0; k<w; k++){ d[k] += d[k+w]; s[k] += s[k+w]; }
  }
  *pDot = d[0];
  *pNorm2 = s[0];
}

/* The dot product of dot_and_norm2(), alone (same lanes, same sums). */
EMBSQLITE_HOT static double dot_f32(const unsigned char *a, const float *q, int n){
  double d[EMBSQLITE_LANES] = {0};
  int i = 0, k, w;
  for(; i+EMBSQLITE_LANES<=n; i+=EMBSQLITE_LANES){  /* pointer steps, as above */
    const unsigned char *p = a + (size_t)i*4;
    const float *r = q + i;
    for(k=0; k<EMBSQLITE_LANES; k++) d[k] += (double)load_f32(p+4*k)*r[k];
  }
  for(; i<n; i++) d[0] += (double)load_f32(a+4*i)*q[i];
  for(w=EMBSQLITE_LANES/2; w>0; w/=2){
    for(k=0; k<w; k++) d[k] += d[k+w];
  }
  return d[0];
}

/* The squared norm of dot_and_norm2(), alone (same lanes, same sums). */
EMBSQLITE_HOT static double norm2_f32(const unsigned char *a, int n){
  double s[EMBSQLITE_LANES] = {0};
  int i = 0, k, w;
  for(; i+EMBSQLITE_LANES<=n; i+=EMBSQLITE_LANES){
    const unsigned char *p = a + (size_t)i*4;
    for(k=0; k<EMBSQLITE_LANES; k++){
      double x = load_f32(p+4*k);
      s[k] += x*x;
    }
  }
  for(; i<n; i++){ double x = load_f32(a+4*i); s[0] += x*x; }
  for(w=EMBSQLITE_LANES/2; w>0; w/=2){
    for(k=0; k<w; k++) s[k] += s[k+w];
  }
  return s[0];
}

/*
** The cosine similarity from a dot product and the two squared norms: 0.0
** when either vector is zero; symmetric in na2 and nb2; within [-1, 1]. A
** NaN (from NaN or infinity in the data) stays NaN for the caller to report.
*/
static double cosine_of(double dot, double na2, double nb2){
  double r;
  if( na2==0.0 || nb2==0.0 ) return 0.0;
  r = dot / sqrt(na2*nb2);
  if( r>1.0 ) return 1.0;
  if( r<-1.0 ) return -1.0;
  return r;
}

#endif /* EMBSQLITE_DOT_H */
