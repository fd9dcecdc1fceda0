/*
** native.c: the C half of the embsqlite Python module (compiled only into the
** cffi module embsqlite._native, right after embsqlite.c, whose static helpers
** it uses). Nothing here is an SQL function.
**
**   embsqlite_auto_init(...)   the entry registered with sqlite3_auto_extension
**   embsqlite_is_bound()       1 once an auto-extension call has bound this copy
**                              of the extension to a SQLite library
**   embsqlite_register_on(db, zFile)  register the SQL functions on an open
**                              connection of that library, if its main database
**                              file is zFile (a check of a handle read by Python)
**   embsqlite_cosine(a, b, n)  cosine_similarity of two blobs, without SQLite
**   embsqlite_all_finite(a, n) 1 if the n float32 values of a are all finite
**   embsqlite_sink_open(a, nRow, nByte)  a handle to a matrix of nRow rows of
**                              nByte bytes, filled by the SQL function below
**   embsqlite_sink_close(h)    forget handle h; the number of rows it received,
**                              or -1 if a row did not fit
**   embsqlite_norms(...)       squared L2 norm of each row of such a matrix
**   embsqlite_topk(...)        best k rows of an in-memory matrix of float32
**                              embeddings, for embsqlite's per-process cache
**   embsqlite_topk_subset(...) the same among the rows a mark array keeps
**   embsqlite_rowid_index(a, n)  sort n (rowid, row) pairs by rowid; -1 if two
**                              rows share a rowid
**   embsqlite_subset_open(aPair, n, aMark)  a handle to the mark array aMark
**                              of the n rows that the sorted pairs aPair map
**   embsqlite_subset_close(h)  forget handle h; the number of rows marked, or
**                              -1 if a rowid named was not among the pairs
**
** SQL functions that only this copy registers (with SQLITE_DIRECTONLY, so no
** trigger or view can call them), for embsqlite's cache; arguments are checked
** and errors name the function:
**
**   embsqlite_sink(h, i, embedding)  copy the float32 blob `embedding` into
**                              row i (from 0) of sink h; NULL. One statement
**                              `SELECT id, embsqlite_sink(h, row_number()
**                              OVER (ORDER BY id) - 1, embedding) ... ORDER
**                              BY id` reads the ids and the matrix in one
**                              read. The row number is an argument because
**                              SQLite may compute result columns before it
**                              sorts (in table order).
**   embsqlite_mark(h, rowid)   mark the row of subset h whose rowid this is;
**                              NULL. One statement `SELECT max(embsqlite_mark(
**                              h, rowid)) FROM embeddings WHERE ...` marks the
**                              rows a search filter keeps, in C.
**   embsqlite_data_version(schema)  SQLITE_FCNTL_DATA_VERSION of that database
**                              of the calling connection (from
**                              sqlite3_context_db_handle); NULL if it has none;
**                              -1 if the database is a deserialized image (the
**                              "memdb" VFS), whose counters restart with every
**                              image, so that no counter can tell two apart
**
** The cache keeps each row's squared norm, so a search computes only dot
** products: half the arithmetic of cosine_similarity(), which must compute
** both. dot_f32(), norm2_f32() and cosine_of() are the ones cosine_similarity()
** uses (embsqlite_dot.h), so a cached search returns the same scores, to the
** bit, as `ORDER BY cosine_similarity(embedding, :q) DESC, id`.
*/

#include <pthread.h>

static int embsqlite_is_bound(void){ return sqlite3_api!=0; }

/*
** The auto-extension entry of the cffi copy: like sqlite3_embsqlite_init, but
** a connection of another SQLite library than the one this copy is bound to
** gets nothing, and opens without error (an auto-extension that fails makes
** every sqlite3_open of that library fail).
*/
static int native_register(sqlite3 *db);

static int embsqlite_auto_init(
  sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi
){
  int rc;
  if( sqlite3_api!=0 && sqlite3_api!=pApi ) return SQLITE_OK;
  rc = sqlite3_embsqlite_init(db, pzErrMsg, pApi);
  return rc==SQLITE_OK ? native_register(db) : rc;
}

/*
** Register everything on db, a handle Python read out of a connection object,
** but only if db is an open connection of the bound library whose main
** database is the file zFile ("" for an in-memory or temporary database), as
** the connection reported it: SQLITE_MISMATCH otherwise.
*/
static int embsqlite_register_on(sqlite3 *db, const char *zFile){
  const char *zMain;
  int rc;
  if( sqlite3_api==0 || db==0 ) return SQLITE_MISUSE;
  zMain = sqlite3_db_filename(db, "main");
  if( zMain==0 || strcmp(zMain, zFile)!=0 ) return SQLITE_MISMATCH;
  rc = sqlite3_embsqlite_init(db, 0, sqlite3_api);
  return rc==SQLITE_OK ? native_register(db) : rc;
}

/* queryvec_new() with malloc: this copy may not be bound to a SQLite yet. */
static QueryVec *queryvec_malloc(const unsigned char *p, int n){
  QueryVec *q = (QueryVec*)malloc(queryvec_size(n));
  if( q ) queryvec_fill(q, p, n);
  return q;
}

static double embsqlite_cosine(
  const unsigned char *a, const unsigned char *b, int n
){
  QueryVec *q = queryvec_malloc(b, n);
  double r;
  if( q==0 ) return NAN;
  r = cosine_with(a, q->v, q->norm2, n);
  free(q);
  return r;
}

/* Write the squared norm of each of the nRow rows of matrix to aNorm2. */
static void embsqlite_norms(
  const unsigned char *matrix, long long nRow, int nDim, double *aNorm2
){
  long long i;
  for(i=0; i<nRow; i++) aNorm2[i] = norm2_f32(matrix + (size_t)i*nDim*4, nDim);
}

static int embsqlite_all_finite(const unsigned char *a, long long n){
  long long i;
  for(i=0; i<n; i++) if( !isfinite(load_f32(a+4*i)) ) return 0;
  return 1;
}

/*
** A sink: a matrix that Python allocated and SQL fills row by row. Sinks are
** found by handle in a list under a mutex, so SQL can only ever write into a
** matrix that is open now, and never past its end.
*/
typedef struct Sink Sink;
struct Sink {
  long long iHandle;       /* what Python and SQL name it by */
  unsigned char *aOut;     /* nRow rows of nByte bytes */
  long long nRow;
  int nByte;
  long long n;             /* rows received */
  int bOver;               /* a row did not fit */
  Sink *pNext;
};
static Sink *sinkList = 0;
static long long sinkLast = 0;
static pthread_mutex_t sinkMutex = PTHREAD_MUTEX_INITIALIZER;

/* Open a sink on aOut; its handle (> 0), or 0 when out of memory. */
static long long embsqlite_sink_open(unsigned char *aOut, long long nRow, int nByte){
  Sink *p = (Sink*)malloc(sizeof(Sink));
  long long h;
  if( p==0 ) return 0;
  p->aOut = aOut;
  p->nRow = nRow;
  p->nByte = nByte;
  p->n = 0;
  p->bOver = 0;
  pthread_mutex_lock(&sinkMutex);
  h = p->iHandle = ++sinkLast;
  p->pNext = sinkList;
  sinkList = p;
  pthread_mutex_unlock(&sinkMutex);
  return h;
}

/* Close sink h: the rows it received, or -1 if a row did not fit or h is unknown. */
static long long embsqlite_sink_close(long long h){
  Sink **pp, *p = 0;
  long long n = -1;
  pthread_mutex_lock(&sinkMutex);
  for(pp=&sinkList; *pp; pp=&(*pp)->pNext){
    if( (*pp)->iHandle==h ){ p = *pp; *pp = p->pNext; break; }
  }
  pthread_mutex_unlock(&sinkMutex);
  if( p ){
    n = p->bOver ? -1 : p->n;
    free(p);
  }
  return n;
}

/* embsqlite_sink(h, i, embedding): copy one row into row i of sink h. */
static void sinkFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  long long h = sqlite3_value_int64(argv[0]);
  long long i = sqlite3_value_int64(argv[1]);
  const void *pBlob = 0;
  int nBlob = 0, eType = sqlite3_value_type(argv[2]);
  const char *zErr = 0;
  Sink *p;
  (void)argc;
  if( sqlite3_value_type(argv[0])!=SQLITE_INTEGER
   || sqlite3_value_type(argv[1])!=SQLITE_INTEGER ){
    sqlite3_result_error(ctx,
        "embsqlite_sink: arguments 1 and 2 must be a sink handle and a row number", -1);
    return;
  }
  if( eType==SQLITE_BLOB ){
    pBlob = sqlite3_value_blob(argv[2]);
    nBlob = sqlite3_value_bytes(argv[2]);
  }
  pthread_mutex_lock(&sinkMutex);
  for(p=sinkList; p && p->iHandle!=h; p=p->pNext){}
  if( p==0 ){
    zErr = "embsqlite_sink: argument 1 is not an open sink";
  }else if( eType!=SQLITE_BLOB || nBlob!=p->nByte || i<0 || i>=p->nRow
         || p->n==p->nRow || (pBlob==0 && nBlob>0) ){
    p->bOver = 1;
    zErr = "embsqlite_sink: the row is not a blob of the sink's row size, "
           "or its row number is outside the sink";
  }else{
    memcpy(p->aOut + (size_t)i*p->nByte, pBlob, (size_t)nBlob);
    p->n++;
  }
  pthread_mutex_unlock(&sinkMutex);
  if( zErr ){
    sqlite3_result_error(ctx, zErr, -1);
  }else{
    sqlite3_result_null(ctx);
  }
}

/*
** 1 if database zDb of db lives in the "memdb" VFS (sqlite3_deserialize):
** every new image restarts its data version, so no counter can tell two
** images apart.
*/
static int is_memdb(sqlite3 *db, const char *zDb){
  char *zName = 0;
  int isMem;
  if( sqlite3_file_control(db, zDb, SQLITE_FCNTL_VFSNAME, &zName)!=SQLITE_OK ){
    return 0;
  }
  isMem = zName!=0 && strstr(zName, "memdb")!=0;
  sqlite3_free(zName);
  return isMem;
}

/*
** embsqlite_data_version(schema): SQLITE_FCNTL_DATA_VERSION of that database
** of the calling connection. Unlike PRAGMA data_version it also moves when
** this connection commits, whatever wrote the pages (SQL, incremental blob
** I/O, a backup into it). NULL when the database has no such counter.
*/
static void dataVersionFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  unsigned int v = 0;
  const char *zDb = (const char*)sqlite3_value_text(argv[0]);
  (void)argc;
  if( zDb==0 ){
    sqlite3_result_error(ctx,
        "embsqlite_data_version: argument 1 must be a schema name", -1);
    return;
  }
  if( is_memdb(sqlite3_context_db_handle(ctx), zDb) ){
    sqlite3_result_int64(ctx, -1);
    return;
  }
  if( sqlite3_file_control(sqlite3_context_db_handle(ctx), zDb,
                           SQLITE_FCNTL_DATA_VERSION, &v)!=SQLITE_OK ){
    sqlite3_result_null(ctx);
    return;
  }
  sqlite3_result_int64(ctx, (sqlite3_int64)v);
}

/*
** A subset: the rows of a loaded matrix that a search filter keeps, marked
** by SQL through embsqlite_mark(). Rows are named by rowid and found in pairs
** (rowid, row) sorted by rowid; like sinks, subsets are found by handle under
** a mutex, so SQL only ever marks an open subset, and never past its end.
*/
typedef struct RowidPos RowidPos;
struct RowidPos {
  long long rowid;
  long long row;           /* the row of the matrix */
};

static int rowidpos_cmp(const void *a, const void *b){
  long long x = ((const RowidPos*)a)->rowid, y = ((const RowidPos*)b)->rowid;
  return x<y ? -1 : x>y;
}

/* Sort the nRow pairs by rowid: 0, or -1 if two share a rowid. */
static int embsqlite_rowid_index(RowidPos *aPair, long long nRow){
  long long i;
  qsort(aPair, (size_t)nRow, sizeof(RowidPos), rowidpos_cmp);
  for(i=1; i<nRow; i++) if( aPair[i].rowid==aPair[i-1].rowid ) return -1;
  return 0;
}

typedef struct Subset Subset;
struct Subset {
  long long iHandle;
  const RowidPos *aPair;   /* nRow pairs sorted by rowid */
  long long nRow;
  unsigned char *aMark;    /* nRow marks, by row; 1 = kept */
  long long nMarked;
  int bMissing;            /* a rowid was not among the pairs */
  Subset *pNext;
};
static Subset *subsetList = 0;
static long long subsetLast = 0;
static pthread_mutex_t subsetMutex = PTHREAD_MUTEX_INITIALIZER;

/* Open a subset marking aMark; its handle (> 0), or 0 when out of memory. */
static long long embsqlite_subset_open(
  const RowidPos *aPair, long long nRow, unsigned char *aMark
){
  Subset *p = (Subset*)malloc(sizeof(Subset));
  long long h;
  if( p==0 ) return 0;
  p->aPair = aPair;
  p->nRow = nRow;
  p->aMark = aMark;
  p->nMarked = 0;
  p->bMissing = 0;
  pthread_mutex_lock(&subsetMutex);
  h = p->iHandle = ++subsetLast;
  p->pNext = subsetList;
  subsetList = p;
  pthread_mutex_unlock(&subsetMutex);
  return h;
}

/* Close subset h: the rows marked, or -1 if a rowid was unknown or h is. */
static long long embsqlite_subset_close(long long h){
  Subset **pp, *p = 0;
  long long n = -1;
  pthread_mutex_lock(&subsetMutex);
  for(pp=&subsetList; *pp; pp=&(*pp)->pNext){
    if( (*pp)->iHandle==h ){ p = *pp; *pp = p->pNext; break; }
  }
  pthread_mutex_unlock(&subsetMutex);
  if( p ){
    n = p->bMissing ? -1 : p->nMarked;
    free(p);
  }
  return n;
}

/* embsqlite_mark(h, rowid): mark the row of subset h with this rowid. */
static void markFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  long long h = sqlite3_value_int64(argv[0]);
  long long rowid = sqlite3_value_int64(argv[1]);
  const char *zErr = 0;
  Subset *p;
  (void)argc;
  if( sqlite3_value_type(argv[0])!=SQLITE_INTEGER
   || sqlite3_value_type(argv[1])!=SQLITE_INTEGER ){
    sqlite3_result_error(ctx,
        "embsqlite_mark: arguments 1 and 2 must be a subset handle and a rowid", -1);
    return;
  }
  pthread_mutex_lock(&subsetMutex);
  for(p=subsetList; p && p->iHandle!=h; p=p->pNext){}
  if( p==0 ){
    zErr = "embsqlite_mark: argument 1 is not an open subset";
  }else{
    long long lo = 0, hi = p->nRow;
    while( lo<hi ){
      long long mid = lo + (hi-lo)/2;
      if( p->aPair[mid].rowid<rowid ) lo = mid+1; else hi = mid;
    }
    if( lo<p->nRow && p->aPair[lo].rowid==rowid ){
      long long row = p->aPair[lo].row;
      if( row>=0 && row<p->nRow && !p->aMark[row] ){
        p->aMark[row] = 1;
        p->nMarked++;
      }else if( row<0 || row>=p->nRow ){
        p->bMissing = 1;
      }
    }else{
      p->bMissing = 1;
    }
  }
  pthread_mutex_unlock(&subsetMutex);
  if( zErr ){
    sqlite3_result_error(ctx, zErr, -1);
  }else{
    sqlite3_result_null(ctx);
  }
}

/* The SQL functions of this copy only, for embsqlite's cache. */
static int native_register(sqlite3 *db){
  int rc = sqlite3_create_function(db, "embsqlite_sink", 3,
      SQLITE_UTF8|SQLITE_DIRECTONLY, 0, sinkFunc, 0, 0);
  if( rc==SQLITE_OK ){
    rc = sqlite3_create_function(db, "embsqlite_mark", 2,
        SQLITE_UTF8|SQLITE_DIRECTONLY, 0, markFunc, 0, 0);
  }
  if( rc==SQLITE_OK ){
    rc = sqlite3_create_function(db, "embsqlite_data_version", 1,
        SQLITE_UTF8|SQLITE_DIRECTONLY, 0, dataVersionFunc, 0, 0);
  }
  return rc;
}

/* One candidate of a top-k search: its score and its row number. */
typedef struct Hit Hit;
struct Hit {
  double score;
  long long row;
};

/*
** 1 if a ranks below b: a lower score, or the same score and a later row.
** Rows are kept in id order, so this is `ORDER BY score DESC, id`.
*/
static int hit_below(const Hit *a, const Hit *b){
  return a->score<b->score || (a->score==b->score && a->row>b->row);
}

static void hit_swap(Hit *a, Hit *b){ Hit t = *a; *a = *b; *b = t; }

/* Restore the heap below i; the root of the heap is its lowest-ranked hit. */
static void heap_down(Hit *aHeap, int n, int i){
  for(;;){
    int l = 2*i+1, r = l+1, m = i;
    if( l<n && hit_below(&aHeap[l], &aHeap[m]) ) m = l;
    if( r<n && hit_below(&aHeap[r], &aHeap[m]) ) m = r;
    if( m==i ) return;
    hit_swap(&aHeap[i], &aHeap[m]);
    i = m;
  }
}

/* Restore the heap above i after appending a hit there. */
static void heap_up(Hit *aHeap, int i){
  while( i>0 ){
    int p = (i-1)/2;
    if( !hit_below(&aHeap[i], &aHeap[p]) ) return;
    hit_swap(&aHeap[i], &aHeap[p]);
    i = p;
  }
}

/*
** Score rows lo..hi-1 (all but row `skip`; -1 skips none; with aMark, only
** rows whose mark is nonzero) of the row-major matrix of nRow embeddings of
** nDim float32 values, whose squared norms are aNorm2 (from embsqlite_norms),
** against the float32 blob `query` of nDim values, and write the best k, best
** first, to aRow/aScore.
** Returns how many were written, -1 when out of memory, -2 when a score is
** not finite (a NaN or infinity in the data) or the arguments are out of range.
*/
static long long topk_scan(
  const unsigned char *matrix, const double *aNorm2, long long nRow, int nDim,
  const unsigned char *query, long long lo, long long hi, long long skip,
  const unsigned char *aMark, int k, long long *aRow, double *aScore
){
  QueryVec *q;
  Hit *aHeap;
  int nHeap = 0;
  long long i;
  if( lo<0 || hi>nRow || lo>hi || nDim<0 || k<0 ) return -2;
  if( k==0 || lo==hi ) return 0;
  q = queryvec_malloc(query, nDim);
  aHeap = (Hit*)malloc(sizeof(Hit)*(size_t)k);
  if( q==0 || aHeap==0 ){ free(q); free(aHeap); return -1; }
  for(i=lo; i<hi; i++){
    Hit h;
    if( i==skip || (aMark && !aMark[i]) ) continue;
    if( aNorm2[i]==0.0 || q->norm2==0.0 ){
      h.score = 0.0;   /* cosine_of() of a zero vector, without the dot product */
    }else{
      h.score = cosine_of(dot_f32(matrix + (size_t)i*nDim*4, q->v, nDim),
                          aNorm2[i], q->norm2);
    }
    h.row = i;
    if( !isfinite(h.score) ){ nHeap = -2; break; }
    if( nHeap<k ){
      aHeap[nHeap] = h;
      heap_up(aHeap, nHeap++);
    }else if( hit_below(&aHeap[0], &h) ){
      aHeap[0] = h;
      heap_down(aHeap, nHeap, 0);
    }
  }
  if( nHeap>0 ){
    /* Pop the lowest-ranked hit into the last free slot until empty. */
    int n = nHeap;
    while( n>0 ){
      aRow[n-1] = aHeap[0].row;
      aScore[n-1] = aHeap[0].score;
      aHeap[0] = aHeap[--n];
      heap_down(aHeap, n, 0);
    }
  }
  free(q);
  free(aHeap);
  return nHeap;
}

/* topk_scan() of every row in lo..hi-1. */
static long long embsqlite_topk(
  const unsigned char *matrix, const double *aNorm2, long long nRow, int nDim,
  const unsigned char *query, long long lo, long long hi, long long skip,
  int k, long long *aRow, double *aScore
){
  return topk_scan(matrix, aNorm2, nRow, nDim, query, lo, hi, skip, 0, k, aRow, aScore);
}

/* topk_scan() of the rows in lo..hi-1 whose mark in aMark (nRow marks) is set. */
static long long embsqlite_topk_subset(
  const unsigned char *matrix, const double *aNorm2, long long nRow, int nDim,
  const unsigned char *query, long long lo, long long hi, long long skip,
  const unsigned char *aMark, int k, long long *aRow, double *aScore
){
  if( aMark==0 ) return -2;
  return topk_scan(matrix, aNorm2, nRow, nDim, query, lo, hi, skip, aMark, k, aRow, aScore);
}
