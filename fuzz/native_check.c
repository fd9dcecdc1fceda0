/*
** native_check.c: drives csrc/native.c and csrc/sketch.c (the C half of the Python
** module: the matrix sink, the subset marks, the top-k scans of the vector cache and the
** vector file's sketch) with random and
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
#include "../csrc/sketch.c"

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

/* Check embsqlite_marked feeding embsqlite_scan (a filter's rows in the cache) on
** a matrix: random marks, ranges, skips and k, against scoring every marked row
** of the range. */
static void check_topk_subset(
  const unsigned char *m, const double *aNorm2, int nRow, int nDim,
  const unsigned char *q, long long *aRow, double *aScore
){
  unsigned char *aMark = malloc((size_t)nRow + 1);
  long long *aPos = malloc(sizeof(long long)*((size_t)nRow + 1));
  int i, k, lo, hi, skip, n, round;
  long long nPos;
  for(round=0; round<4; round++){
    int nKept = 0;
    for(i=0; i<nRow; i++) aMark[i] = round==0 ? 0 : round==1 ? 1 : (rnd()%(round*2)==0);
    lo = nRow ? (int)(rnd()%(nRow+1)) : 0;
    hi = lo + (nRow-lo ? (int)(rnd()%(nRow-lo+1)) : 0);
    skip = (rnd()%3==0 || hi==lo) ? -1 : lo + (int)(rnd()%(hi-lo));
    for(i=lo; i<hi; i++) nKept += aMark[i] && i!=skip;
    nPos = embsqlite_marked(aMark, lo, hi, aPos);
    for(i=1; i<nPos; i++) CHECK( aPos[i-1]<aPos[i] );
    for(k=0; k<=nRow+2; k+=1+nRow/4){
      n = (int)embsqlite_scan(m, aNorm2, nRow, nDim, q, aPos, 0, nPos, skip, k, 1+(k%2),
                              aRow, aScore, 0);
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
  CHECK( embsqlite_marked(aMark, nRow, nRow, aPos)==0 );
  free(aMark);
  free(aPos);
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

/*
** Check embsqlite_scan (threads, a list of row numbers, the best score left
** out), embsqlite_ties and embsqlite_positions on a matrix of nRow rows with
** many exact ties, against brute force.
*/
static void check_scan(int nRow, int nDim){
  unsigned char *m = malloc((size_t)nRow*nDim*4 + 1);
  unsigned char *q = malloc((size_t)nDim*4 + 1);
  double *aNorm2 = malloc(sizeof(double)*(nRow>0?nRow:1));
  double *aAll = malloc(sizeof(double)*(nRow>0?nRow:1));
  long long *aPos = malloc(sizeof(long long)*(nRow>0?nRow:1));
  long long *aRow = malloc(sizeof(long long)*(nRow+1));
  long long *aOut = malloc(sizeof(long long)*(nRow+1));
  double *aScore = malloc(sizeof(double)*(nRow+1));
  char *aKept = malloc((size_t)(nRow>0?nRow:1));
  long long i, nPos = 0, n, j;
  int k, nThread, useList;
  for(i=0; i<(long long)nRow*nDim; i++) store_f32(m+4*i, (float)(rnd()%3) - 1.0f);
  for(i=0; i<nDim; i++) store_f32(q+4*i, (float)(rnd()%3) - 1.0f);
  embsqlite_norms(m, nRow, nDim, aNorm2);
  for(i=0; i<nRow; i++){
    aAll[i] = embsqlite_cosine(m+(size_t)i*nDim*4, q, nDim);
    if( rnd()%2 ) aPos[nPos++] = i;
  }
  for(useList=0; useList<2; useList++){
    long long nScan = useList ? nPos : nRow;
    for(nThread=1; nThread<=3; nThread++){
      for(k=1; k<=nScan+1; k = k*3+1){
        double bestOut;
        long long skip = nScan ? (useList ? aPos[rnd()%nScan] : (long long)(rnd()%nScan)) : -1;
        n = embsqlite_scan(m, aNorm2, nRow, nDim, q, useList ? aPos : 0, 0, nScan,
                           skip, k, nThread, aRow, aScore, &bestOut);
        CHECK( n==(k < nScan-(skip>=0) ? k : nScan-(skip>=0)) );
        for(i=0; i<n; i++){
          CHECK( aScore[i]==aAll[aRow[i]] && aRow[i]!=skip );
          if( i>0 ) CHECK( before(aScore[i-1], aRow[i-1], aScore[i], aRow[i]) );
        }
        {
          /* every row scanned and not returned ranks after the last one returned,
          ** and the best of them is bestOut */
          double want = -INFINITY;
          memset(aKept, 0, (size_t)(nRow>0?nRow:1));
          for(i=0; i<n; i++) aKept[aRow[i]] = 1;
          for(j=0; j<nScan; j++){
            long long r = useList ? aPos[j] : j;
            if( aKept[r] || r==skip ) continue;
            CHECK( before(aScore[n-1], aRow[n-1], aAll[r], r) );
            if( aAll[r]>want ) want = aAll[r];
          }
          CHECK( bestOut==want );
        }
        if( n>0 ){
          long long nTie = embsqlite_ties(m, aNorm2, nRow, nDim, q, useList ? aPos : 0,
                                          0, nScan, skip, aScore[n-1], aOut, nRow+1);
          long long want = 0;
          for(j=0; j<nScan; j++){
            long long r = useList ? aPos[j] : j;
            if( r!=skip && aAll[r]==aScore[n-1] ) CHECK( aOut[want++]==r );
          }
          CHECK( nTie==want );
        }
      }
    }
  }
  /* rowids 10, 20, ... : positions of a sorted list, absent ones left out */
  if( nRow>0 ){
    long long *aRowid = malloc(sizeof(long long)*nRow);
    long long *aWant = malloc(sizeof(long long)*(2*nRow+1));
    long long nWant = 0, nFound;
    for(i=0; i<nRow; i++) aRowid[i] = 10*(i+1);
    for(i=0; i<=10*nRow+10; i+=1+(long long)(rnd()%15)) aWant[nWant++] = i;
    nFound = embsqlite_positions(aRowid, nRow, aWant, nWant, aOut);
    n = 0;
    for(i=0; i<nWant; i++){
      if( aWant[i]%10==0 && aWant[i]>=10 && aWant[i]<=10*nRow ){
        CHECK( aOut[n++]==aWant[i]/10-1 );
      }
    }
    CHECK( nFound==n );
    if( nWant>1 ){
      long long t = aWant[0]; aWant[0] = aWant[1]; aWant[1] = t;
      CHECK( embsqlite_positions(aRowid, nRow, aWant, nWant, aOut)==-2 );
    }
    free(aRowid); free(aWant);
  }
  /* bad arguments are refused, not read */
  CHECK( embsqlite_scan(m, aNorm2, nRow, nDim, q, 0, 0, nRow+1, -1, 1, 2, aRow, aScore, 0)==-2 );
  if( nRow>0 ){
    long long bad = nRow;
    CHECK( embsqlite_scan(m, aNorm2, nRow, nDim, q, &bad, 0, 1, -1, 1, 1, aRow, aScore, 0)==-2 );
  }
  free(m); free(q); free(aNorm2); free(aAll); free(aPos); free(aRow); free(aOut); free(aScore);
  free(aKept);
}

/* The file sink: rows appended by SQL in rowid order land in the file with
** their norms and rowids; a rowid out of order or a row of another size fails. */
static void check_file_sink(void){
  sqlite3 *db;
  char zSql[400];
  FILE *f = tmpfile();
  int fd, isNull;
  long long h, n;
  unsigned char aRow[12];
  double norm;
  long long rowid;
  CHECK( f!=0 );
  fd = fileno(f);
  CHECK( sqlite3_open(":memory:", &db)==SQLITE_OK );
  exec_ok(db, "CREATE TABLE t(e BLOB);"
              "INSERT INTO t(rowid, e) VALUES (5, x'0000803f0000000000000040'),"
              " (9, NULL), (12, x'000000000000803f00000000')");
  h = embsqlite_sink_file(fd, 12, 16);
  CHECK( h>0 );
  snprintf(zSql, sizeof(zSql), "SELECT sum(embsqlite_sink_append(%lld, rowid, e) IS NULL)"
           " FROM t NOT INDEXED WHERE e IS NOT NULL", h);
  CHECK( query_int(db, zSql, &isNull)==2 && !isNull );
  n = embsqlite_sink_close(h);
  CHECK( n==2 );
  CHECK( pread(fd, aRow, 12, 16+12)==12 && load_f32(aRow+4)==1.0f );
  CHECK( pread(fd, &norm, 8, sink_norms_offset(16, 2, 12))==8 && norm==5.0 );
  CHECK( pread(fd, &rowid, 8, sink_norms_offset(16, 2, 12)+16+8)==8 && rowid==12 );
  /* out of rowid order, and a row of another size */
  h = embsqlite_sink_file(fd, 12, 16);
  snprintf(zSql, sizeof(zSql), "SELECT embsqlite_sink_append(%lld, 7, x'000000000000000000000000'),"
           " embsqlite_sink_append(%lld, 6, x'000000000000000000000000')", h, h);
  CHECK( fails_with(db, zSql, "does not ascend") );
  CHECK( embsqlite_sink_close(h)==-1 );
  h = embsqlite_sink_file(fd, 12, 16);
  snprintf(zSql, sizeof(zSql), "SELECT embsqlite_sink_append(%lld, 1, x'00')", h);
  CHECK( fails_with(db, zSql, "sink's row size") );
  CHECK( embsqlite_sink_close(h)==-1 );
  snprintf(zSql, sizeof(zSql), "SELECT embsqlite_sink_append(%lld, 1, x'00')", h);
  CHECK( fails_with(db, zSql, "not an open file sink") );
  CHECK( embsqlite_sink_file(fd, 7, 0)==0 && embsqlite_sink_file(-1, 12, 0)==0 );
  sqlite3_close(db);
  fclose(f);
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

/*
** The sketch scan against the full scan, on matrices of spread values, ties
** and zero rows (variant 0), rows scaled from subnormal to near FLT_MAX (1),
** a NaN row (2): the same rows, the same score bits, the same answer to
** "does a row left out tie with the k-th", the same errors.
*/
static void check_sketch(int nRow, int nDim, int variant){
  unsigned char *m = malloc((size_t)nRow*nDim*4 + 1);
  unsigned char *q = malloc((size_t)nDim*4 + 1);
  double *aNorm2 = malloc(sizeof(double)*(nRow>0?nRow:1));
  signed char *aCode = malloc((size_t)nRow*nDim + 1);
  SketchRow *aSk = malloc(sizeof(SketchRow)*(nRow>0?nRow:1));
  long long *aPos = malloc(sizeof(long long)*(nRow>0?nRow:1));
  long long *aRow1 = malloc(sizeof(long long)*(nRow+1));
  long long *aRow2 = malloc(sizeof(long long)*(nRow+1));
  double *aScore1 = malloc(sizeof(double)*(nRow+1));
  double *aScore2 = malloc(sizeof(double)*(nRow+1));
  long long i, j, nPos = 0, nBad;
  int round;
  for(i=0; i<nRow; i++){
    int e = variant==1 ? (int)(rnd()%270) - 145 : 0;
    for(j=0; j<nDim; j++){
      store_f32(m+4*((size_t)i*nDim+j), ldexpf(rnd_float(), e));
    }
    if( rnd()%2 ) aPos[nPos++] = i;
  }
  if( variant==2 && nRow>0 ) store_f32(m + 4*(size_t)(rnd()%nRow)*nDim, NAN);
  embsqlite_norms(m, nRow, nDim, aNorm2);
  nBad = embsqlite_sketch_build(m, aNorm2, nRow, nDim, aCode, aSk, 1 + (int)(rnd()%3));
  CHECK( nBad==(variant==2 && nRow>0 && nDim>0) );
  for(round=0; round<12; round++){
    int useList = round%2, k = 1 + (int)(rnd()%12), nThread = 1 + (int)(rnd()%3);
    long long nScan = useList ? nPos : nRow, n1, n2;
    long long skip = nScan && rnd()%2 ? (long long)(rnd()%nRow) : -1;
    double best1, best2;
    if( nRow>0 && round%3==0 ){
      memcpy(q, m + (size_t)(rnd()%nRow)*nDim*4, (size_t)nDim*4);   /* a stored row */
    }else{
      int e = variant==1 ? (int)(rnd()%270) - 145 : 0;
      for(j=0; j<nDim; j++) store_f32(q+4*j, round==4 ? 0.0f : ldexpf(rnd_float(), e));
    }
    n1 = embsqlite_scan(m, aNorm2, nRow, nDim, q, useList ? aPos : 0, 0, nScan, skip,
                        k, nThread, aRow1, aScore1, &best1);
    n2 = embsqlite_sketch_scan(aCode, aSk, m, aNorm2, nRow, nDim, q, useList ? aPos : 0,
                               0, nScan, skip, k, nThread, aRow2, aScore2, &best2);
    CHECK( n1==n2 );
    for(i=0; i<n1; i++) CHECK( aRow1[i]==aRow2[i] && aScore1[i]==aScore2[i] );
    if( n1>0 ) CHECK( (best1==aScore1[n1-1])==(best2==aScore2[n1-1]) );
  }
  free(m); free(q); free(aNorm2); free(aCode); free(aSk); free(aPos);
  free(aRow1); free(aRow2); free(aScore1); free(aScore2);
}

int main(void){
  static const int aDim[] = {1, 2, 3, 7, 15, 16, 17, 33, 384};
  unsigned int i;
  int nRow;
  CHECK( sqlite3_auto_extension((void(*)(void))embsqlite_auto_init)==SQLITE_OK );
  check_sink();
  check_subset();
  check_file_sink();
  check_data_version();
  check_scan(0, 3);
  check_scan(37, 5);
  check_scan(40000, 3);   /* enough rows for more than one thread */
  for(i=0; i<sizeof(aDim)/sizeof(aDim[0]); i++){
    for(nRow=0; nRow<=40; nRow+=(nRow<5 ? 1 : 7)){
      check_topk(nRow, aDim[i], (int)(rnd()%4));
    }
  }
  for(i=0; i<sizeof(aDim)/sizeof(aDim[0]); i++){
    for(nRow=0; nRow<=60; nRow+=(nRow<5 ? 1 : 11)){
      check_sketch(nRow, aDim[i], (int)(rnd()%3));
    }
  }
  check_sketch(40000, 16, 0);   /* more than one thread */
  check_sketch(40000, 16, 1);
  printf("native checks passed: %d\n", nCheck);
  return 0;
}
