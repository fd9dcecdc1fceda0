/*
** native_check.c: drives csrc/native.c (the C half of the Python module: the
** matrix sink, the subset marks and the top-k scans of the vector cache) with random and
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

/* Check embsqlite_topk_subset on a matrix: random marks, ranges and k, against
** scoring every marked row of the range. */
static void check_topk_subset(
  const unsigned char *m, const double *aNorm2, int nRow, int nDim,
  const unsigned char *q, long long *aRow, double *aScore
){
  unsigned char *aMark = malloc((size_t)nRow + 1);
  int i, k, lo, hi, skip, n, round;
  for(round=0; round<4; round++){
    int nKept = 0;
    for(i=0; i<nRow; i++) aMark[i] = round==0 ? 0 : round==1 ? 1 : (rnd()%(round*2)==0);
    lo = nRow ? (int)(rnd()%(nRow+1)) : 0;
    hi = lo + (nRow-lo ? (int)(rnd()%(nRow-lo+1)) : 0);
    skip = (rnd()%3==0 || hi==lo) ? -1 : lo + (int)(rnd()%(hi-lo));
    for(i=lo; i<hi; i++) nKept += aMark[i] && i!=skip;
    for(k=0; k<=nRow+2; k+=1+nRow/4){
      n = (int)embsqlite_topk_subset(m, aNorm2, nRow, nDim, q, lo, hi, skip, aMark, k, aRow, aScore);
      CHECK( n==(nKept<k ? nKept : k) );
      for(i=0; i<n; i++){
        long long r = aRow[i], j;
        int better = 0;
        CHECK( r>=lo && r<hi && r!=skip && aMark[r] );
        CHECK( aScore[i]==embsqlite_cosine(m+(size_t)r*nDim*4, q, nDim) );
        for(j=lo; j<hi; j++){
          if( j==skip || j==r || !aMark[j] ) continue;
          if( before(embsqlite_cosine(m+(size_t)j*nDim*4, q, nDim), j, aScore[i], r) ) better++;
        }
        CHECK( better==i );
      }
    }
  }
  CHECK( embsqlite_topk_subset(m, aNorm2, nRow, nDim, q, 0, nRow, -1, 0, 1, aRow, aScore)==-2 );
  free(aMark);
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
  check_topk_subset(m, aNorm2, nRow, nDim, q, aRow, aScore);
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

/* 1 if zSql fails with an error message containing zWant; aborts if it works. */
static int fails_with(sqlite3 *db, const char *zSql, const char *zWant){
  char *zErr = 0;
  int ok;
  if( sqlite3_exec(db, zSql, 0, 0, &zErr)==SQLITE_OK ) return 0;
  ok = zErr!=0 && strstr(zErr, zWant)!=0;
  if( !ok ) fprintf(stderr, "unexpected error: %s\n  in %s\n", zErr, zSql);
  sqlite3_free(zErr);
  return ok;
}

/* The integer in the one row of zSql; *pNull is set when it is NULL. */
static long long query_int(sqlite3 *db, const char *zSql, int *pNull){
  sqlite3_stmt *pStmt = 0;
  long long v;
  CHECK( sqlite3_prepare_v2(db, zSql, -1, &pStmt, 0)==SQLITE_OK );
  CHECK( sqlite3_step(pStmt)==SQLITE_ROW );
  *pNull = sqlite3_column_type(pStmt, 0)==SQLITE_NULL;
  v = sqlite3_column_int64(pStmt, 0);
  sqlite3_finalize(pStmt);
  return v;
}

/* Fill a sink of nRow rows of 12 bytes from the vectors of collection iColl of
** table zTab in id order; the rows it received, or -1 (and zWant in the error). */
static long long fill_sink(
  sqlite3 *db, const char *zTab, int iColl, unsigned char *out, int nRow,
  const char *zWant
){
  char zSql[400];
  long long h = embsqlite_sink_open(out, nRow, 12);
  CHECK( h>0 );
  snprintf(zSql, sizeof(zSql),
    "SELECT id, embsqlite_sink(%lld, row_number() OVER (ORDER BY id) - 1, embedding)"
    " FROM %s WHERE collection_id=%d AND embedding IS NOT NULL ORDER BY id",
    h, zTab, iColl);
  if( zWant ) CHECK( fails_with(db, zSql, zWant) );
  else exec_ok(db, zSql);
  return embsqlite_sink_close(h);
}

/* The SQL function embsqlite_sink on good and malformed collections. */
static void check_sink(void){
  sqlite3 *db;
  unsigned char out[4*3*4];
  long long h;
  CHECK( sqlite3_open(":memory:", &db)==SQLITE_OK );
  CHECK( embsqlite_is_bound() );
  exec_ok(db,
    "CREATE TABLE embeddings(collection_id INTEGER, id TEXT, embedding BLOB,"
    " PRIMARY KEY(collection_id, id));"
    "INSERT INTO embeddings VALUES"
    " (1,'b',embedding_from_json('[4,5,6]')),"
    " (1,'a',embedding_from_json('[1,2,3]')),"
    " (1,'c',embedding_from_json('[7,8,9]')),"
    " (2,'x',embedding_from_json('[1,2]')),"          /* another length */
    " (2,'y',embedding_from_json('[1,2,3]')),"
    " (5,'a',NULL),"
    " (5,'b',embedding_from_json('[2,2,2]')),"
    " (4,'t','text, not a blob');"
    /* no index: SQLite computes the columns in table order, then sorts */
    "CREATE TABLE heap AS SELECT * FROM embeddings;");
  memset(out, 0, sizeof(out));
  CHECK( fill_sink(db, "embeddings", 1, out, 3, 0)==3 );
  CHECK( load_f32(out)==1.0f && load_f32(out+12)==4.0f && load_f32(out+24)==7.0f );
  memset(out, 0, sizeof(out));
  CHECK( fill_sink(db, "heap", 1, out, 3, 0)==3 );      /* id order, not table order */
  CHECK( load_f32(out)==1.0f && load_f32(out+12)==4.0f && load_f32(out+24)==7.0f );
  CHECK( fill_sink(db, "embeddings", 1, out, 2, "outside the sink")==-1 );
  CHECK( fill_sink(db, "embeddings", 1, out, 4, 0)==3 ); /* fewer: caller compares */
  CHECK( fill_sink(db, "embeddings", 2, out, 2, "row size")==-1 );
  CHECK( fill_sink(db, "embeddings", 5, out, 2, 0)==1 );
  CHECK( load_f32(out)==2.0f );
  CHECK( fill_sink(db, "embeddings", 4, out, 1, "row size")==-1 );   /* TEXT */
  CHECK( fill_sink(db, "embeddings", 9, out, 1, 0)==0 );  /* no such collection */
  /* a handle that is not open, or closed, or not an integer */
  CHECK( fails_with(db, "SELECT embsqlite_sink(123456789, 0, x'000000000000000000000000')",
                    "not an open sink") );
  h = embsqlite_sink_open(out, 1, 12);
  CHECK( embsqlite_sink_close(h)==0 && embsqlite_sink_close(h)==-1 );
  CHECK( fails_with(db, "SELECT embsqlite_sink('1', 0, x'00')", "sink handle") );
  /* SQLITE_DIRECTONLY: no view or trigger may write into a sink */
  exec_ok(db, "CREATE VIEW v AS SELECT embsqlite_sink(1, 0, x'00') AS s");
  CHECK( fails_with(db, "SELECT * FROM v", "unsafe use of embsqlite_sink") );
  CHECK( sqlite3_close(db)==SQLITE_OK );
}

/* embsqlite_rowid_index, embsqlite_mark and subsets: SQL marks rows by rowid. */
static void check_subset(void){
  sqlite3 *db;
  RowidPos aPair[4] = {{40, 0}, {7, 1}, {-3, 2}, {1000, 3}};
  RowidPos aDup[3] = {{5, 0}, {6, 1}, {5, 2}};
  unsigned char aMark[4];
  char zSql[200];
  long long h;
  CHECK( sqlite3_open(":memory:", &db)==SQLITE_OK );
  exec_ok(db, "CREATE TABLE t(x); INSERT INTO t(rowid, x) VALUES"
              " (40, 1), (7, 0), (-3, 1), (1000, 2), (8, 1);");
  CHECK( embsqlite_rowid_index(aPair, 4)==0 );
  CHECK( aPair[0].rowid==-3 && aPair[0].row==2 && aPair[3].rowid==1000 && aPair[3].row==3 );
  CHECK( embsqlite_rowid_index(aDup, 3)==-1 );
  CHECK( embsqlite_rowid_index(aDup, 0)==0 );
  memset(aMark, 0, sizeof(aMark));
  h = embsqlite_subset_open(aPair, 4, aMark);
  CHECK( h>0 );
  snprintf(zSql, sizeof(zSql), "SELECT max(embsqlite_mark(%lld, rowid)) FROM t WHERE x >= 1 AND rowid != 8", h);
  exec_ok(db, zSql);
  exec_ok(db, zSql);                                  /* marking twice counts once */
  CHECK( embsqlite_subset_close(h)==3 );
  CHECK( aMark[0]==1 && aMark[1]==0 && aMark[2]==1 && aMark[3]==1 );
  /* a rowid that is not among the pairs: the subset is unusable */
  memset(aMark, 0, sizeof(aMark));
  h = embsqlite_subset_open(aPair, 4, aMark);
  snprintf(zSql, sizeof(zSql), "SELECT max(embsqlite_mark(%lld, rowid)) FROM t", h);
  exec_ok(db, zSql);
  CHECK( embsqlite_subset_close(h)==-1 && embsqlite_subset_close(h)==-1 );
  CHECK( fails_with(db, "SELECT embsqlite_mark(123456789, 7)", "not an open subset") );
  CHECK( fails_with(db, "SELECT embsqlite_mark('1', 7)", "subset handle") );
  CHECK( fails_with(db, "SELECT embsqlite_mark(1, 7.5)", "subset handle") );
  /* SQLITE_DIRECTONLY: no view or trigger may mark a subset */
  exec_ok(db, "CREATE VIEW vm AS SELECT embsqlite_mark(1, 7) AS s");
  CHECK( fails_with(db, "SELECT * FROM vm", "unsafe use of embsqlite_mark") );
  CHECK( sqlite3_close(db)==SQLITE_OK );
}

/* embsqlite_data_version() moves with this connection's own commits. */
static void check_data_version(void){
  sqlite3 *db;
  long long v0, v1;
  int isNull;
  CHECK( sqlite3_open(":memory:", &db)==SQLITE_OK );
  exec_ok(db, "CREATE TABLE t(x)");
  v0 = query_int(db, "SELECT embsqlite_data_version('main')", &isNull);
  CHECK( !isNull );
  exec_ok(db, "INSERT INTO t VALUES (1)");
  v1 = query_int(db, "SELECT embsqlite_data_version('main')", &isNull);
  CHECK( !isNull && v1!=v0 );
  CHECK( query_int(db, "SELECT embsqlite_data_version('main')", &isNull)==v1 );
  query_int(db, "SELECT embsqlite_data_version('nosuch')", &isNull);
  CHECK( isNull );
  CHECK( fails_with(db, "SELECT embsqlite_data_version(NULL)", "schema name") );
  CHECK( sqlite3_close(db)==SQLITE_OK );
}

int main(void){
  static const int aDim[] = {1, 2, 3, 7, 15, 16, 17, 33, 384};
  unsigned int i;
  int nRow;
  CHECK( sqlite3_auto_extension((void(*)(void))embsqlite_auto_init)==SQLITE_OK );
  check_sink();
  check_subset();
  check_data_version();
  for(i=0; i<sizeof(aDim)/sizeof(aDim[0]); i++){
    for(nRow=0; nRow<=40; nRow+=(nRow<5 ? 1 : 7)){
      check_topk(nRow, aDim[i], (int)(rnd()%4));
    }
  }
  printf("native checks passed: %d\n", nCheck);
  return 0;
}
