/*
** native_check.c: drives csrc/native.c (the C half of the Python module: the
** matrix reader and the top-k scan of the vector cache) with random and
** malformed input, outside Python, so that AddressSanitizer, UBSan and
** valgrind can watch it (tests/test_native_safety.py builds and runs it).
**
** It includes the two sources as the cffi module does, binds them to the
** system SQLite through sqlite3_auto_extension, and checks every result
** against a brute-force reference. Exit status 0 and "native checks passed"
** mean every check held; any failure aborts.
*/
#include "../csrc/embsqlite.c"
#include "../csrc/native.c"

/* In this file's own code, call the real SQLite, not the extension's table. */
#undef sqlite3_auto_extension
#undef sqlite3_open
#undef sqlite3_exec
#undef sqlite3_close
#undef sqlite3_free

#include <stdio.h>

static int nCheck = 0;

#define CHECK(x) do{ nCheck++; if( !(x) ){ \
  fprintf(stderr, "check failed at line %d: %s\n", __LINE__, #x); abort(); } }while(0)

/* A small deterministic generator (xorshift), so runs repeat exactly. */
static unsigned long long rngState = 88172645463325252ULL;
static unsigned long long rnd(void){
  rngState ^= rngState<<13; rngState ^= rngState>>7; rngState ^= rngState<<17;
  return rngState;
}
static float rnd_float(void){
  /* a few exact ties and zero rows, mostly spread values */
  switch( rnd()%8 ){
    case 0: return 0.0f;
    case 1: return 1.0f;
    default: return (float)((double)(rnd()%2000001)/1000000.0 - 1.0);
  }
}

/* Brute force: is row a ranked before row b (score desc, then row asc)? */
static int before(double sa, long long a, double sb, long long b){
  return sa>sb || (sa==sb && a<b);
}

/* Check embsqlite_topk on one random matrix, against scoring every row. */
static void check_topk(int nRow, int nDim, int misalign){
  size_t nByte = (size_t)nRow*nDim*4;
  unsigned char *buf = malloc(nByte + 4 + 1);
  unsigned char *m = buf + misalign;       /* blobs need not be aligned */
  unsigned char *q = malloc((size_t)nDim*4 + 1);
  double *aNorm2 = malloc(sizeof(double)*(nRow>0?nRow:1));
  double *aScore = malloc(sizeof(double)*(nRow+5));
  long long *aRow = malloc(sizeof(long long)*(nRow+5));
  int i, k, lo, hi, skip, n;
  for(i=0; i<nRow*nDim; i++) store_f32(m+4*i, rnd_float());
  for(i=0; i<nDim; i++) store_f32(q+4*i, rnd_float());
  embsqlite_norms(m, nRow, nDim, aNorm2);
  for(k=0; k<=nRow+4; k+=1+nRow/3){
    lo = nRow ? (int)(rnd()%(nRow+1)) : 0;
    hi = lo + (nRow-lo ? (int)(rnd()%(nRow-lo+1)) : 0);
    skip = (rnd()%3==0 || hi==lo) ? -1 : lo + (int)(rnd()%(hi-lo));
    n = (int)embsqlite_topk(m, aNorm2, nRow, nDim, q, lo, hi, skip, k, aRow, aScore);
    {
      int expect = (hi-lo) - (skip>=0);
      if( expect>k ) expect = k;
      CHECK( n==expect );
    }
    for(i=0; i<n; i++){
      long long r = aRow[i];
      long long j;
      int better = 0;
      CHECK( r>=lo && r<hi && r!=skip );
      CHECK( aScore[i]==embsqlite_cosine(m+(size_t)r*nDim*4, q, nDim) );
      if( i>0 ) CHECK( before(aScore[i-1], aRow[i-1], aScore[i], r) );
      /* exactly i rows of the range rank before row r */
      for(j=lo; j<hi; j++){
        if( j==skip || j==r ) continue;
        if( before(embsqlite_cosine(m+(size_t)j*nDim*4, q, nDim), j, aScore[i], r) ) better++;
      }
      CHECK( better==i );
    }
  }
  /* bad arguments are refused, not read */
  CHECK( embsqlite_topk(m, aNorm2, nRow, nDim, q, -1, nRow, -1, 1, aRow, aScore)==-2 );
  CHECK( embsqlite_topk(m, aNorm2, nRow, nDim, q, 0, nRow+1, -1, 1, aRow, aScore)==-2 );
  CHECK( embsqlite_topk(m, aNorm2, nRow, nDim, q, 0, nRow, -1, -1, aRow, aScore)==-2 );
  if( nRow>0 && nDim>0 && embsqlite_cosine(q, q, nDim)!=0.0 ){
    /* a NaN anywhere in the scanned rows is reported (a zero query scores every
    ** row 0.0 without reading it, as cosine_similarity does) */
    store_f32(m + ((size_t)(nRow-1)*nDim)*4, NAN);
    embsqlite_norms(m, nRow, nDim, aNorm2);
    CHECK( embsqlite_all_finite(m, (long long)nRow*nDim)==0 );
    CHECK( embsqlite_topk(m, aNorm2, nRow, nDim, q, 0, nRow, -1, 1, aRow, aScore)==-2 );
  }
  free(buf); free(q); free(aNorm2); free(aScore); free(aRow);
}

/* Run SQL on db, aborting on error. */
static void exec_ok(sqlite3 *db, const char *zSql){
  char *zErr = 0;
  if( sqlite3_exec(db, zSql, 0, 0, &zErr)!=SQLITE_OK ){
    fprintf(stderr, "SQL error: %s\n  in %s\n", zErr, zSql);
    abort();
  }
}

/* Check embsqlite_read_matrix on good and malformed collections. */
static void check_read_matrix(void){
  sqlite3 *db;
  unsigned char out[4*3*4];
  unsigned char ids[16];
  long long ends[4];
  long long n;
  CHECK( sqlite3_open(":memory:", &db)==SQLITE_OK );
  CHECK( embsqlite_is_bound() );
  exec_ok(db,
    "CREATE TABLE embeddings(collection_id INTEGER, id TEXT, embedding BLOB,"
    " PRIMARY KEY(collection_id, id));"
    "INSERT INTO embeddings VALUES"
    " (1,'bb',embedding_from_json('[4,5,6]')),"
    " (1,'a',embedding_from_json('[1,2,3]')),"
    " (1,'c',embedding_from_json('[7,8,9]')),"
    " (2,'x',embedding_from_json('[1,2]')),"          /* another length */
    " (2,'y',embedding_from_json('[1,2,3]')),"
    " (3,'n',NULL),"                                   /* a NULL vector */
    " (5,'a',NULL),"
    " (5,'b',embedding_from_json('[2,2,2]')),"
    " (4,'t','text, not a blob'),"
    " (6,x'01',embedding_from_json('[1,2,3]'));");     /* an id that is a blob */
  /* in id order: a, bb, c; each id followed by a 0 byte */
  n = embsqlite_read_matrix(db, 1, out, 3, 12, ids, sizeof(ids), ends);
  CHECK( n==3 );
  CHECK( load_f32(out)==1.0f && load_f32(out+12)==4.0f && load_f32(out+24)==7.0f );
  CHECK( ends[0]==2 && ends[1]==5 && ends[2]==7 );
  CHECK( memcmp(ids, "a\0bb\0c\0", 7)==0 );
  CHECK( embsqlite_read_matrix(db, 1, out, 3, 12, ids, 6, ends)==-1 ); /* ids too long */
  CHECK( embsqlite_read_matrix(db, 1, out, 2, 12, ids, sizeof(ids), ends)==-1 );
  CHECK( embsqlite_read_matrix(db, 1, out, 4, 12, ids, sizeof(ids), ends)==3 );
  CHECK( embsqlite_read_matrix(db, 2, out, 2, 12, ids, sizeof(ids), ends)==-1 );
  CHECK( embsqlite_read_matrix(db, 3, out, 1, 12, ids, sizeof(ids), ends)==0 );
  CHECK( embsqlite_read_matrix(db, 5, out, 2, 12, ids, sizeof(ids), ends)==1 );
  CHECK( load_f32(out)==2.0f && ends[0]==2 && ids[0]=='b' );
  CHECK( embsqlite_read_matrix(db, 4, out, 1, 12, ids, sizeof(ids), ends)==-1 );
  CHECK( embsqlite_read_matrix(db, 6, out, 1, 12, ids, sizeof(ids), ends)==-1 );
  CHECK( embsqlite_read_matrix(db, 9, out, 1, 12, ids, sizeof(ids), ends)==0 );
  exec_ok(db, "DROP TABLE embeddings");
  CHECK( embsqlite_read_matrix(db, 1, out, 3, 12, ids, sizeof(ids), ends)==-2 );
  CHECK( sqlite3_close(db)==SQLITE_OK );
}

/* embsqlite_data_version moves with this connection's own commits. */
static void check_data_version(void){
  sqlite3 *db;
  long long v0, v1;
  CHECK( sqlite3_open(":memory:", &db)==SQLITE_OK );
  exec_ok(db, "CREATE TABLE t(x)");
  v0 = embsqlite_data_version(db, "main");
  exec_ok(db, "INSERT INTO t VALUES (1)");
  v1 = embsqlite_data_version(db, "main");
  CHECK( v0>=0 && v1>=0 && v1!=v0 );
  CHECK( embsqlite_data_version(db, "main")==v1 );    /* no commit, no move */
  CHECK( embsqlite_data_version(db, "nosuch")==-1 );
  CHECK( sqlite3_close(db)==SQLITE_OK );
}

int main(void){
  static const int aDim[] = {1, 2, 3, 7, 15, 16, 17, 33, 384};
  unsigned int i;
  int nRow;
  CHECK( sqlite3_auto_extension((void(*)(void))embsqlite_auto_init)==SQLITE_OK );
  check_read_matrix();
  check_data_version();
  for(i=0; i<sizeof(aDim)/sizeof(aDim[0]); i++){
    for(nRow=0; nRow<=40; nRow+=(nRow<5 ? 1 : 7)){
      check_topk(nRow, aDim[i], (int)(rnd()%4));
    }
  }
  printf("native checks passed: %d\n", nCheck);
  return 0;
}
