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
**   embsqlite_sink_file(fd, nByte, iOff)  a handle to a file sink: rows
**                              appended by embsqlite_sink_append() are written
**                              to fd from offset iOff; closing it writes each
**                              row's squared norm, then its rowid, after the
**                              matrix (at the next multiple of 8)
**   embsqlite_norms(...)       squared L2 norm of each row of such a matrix
**   embsqlite_scan(...)        best k rows of a matrix of float32 embeddings
**                              (all rows, a range, or a list of row numbers),
**                              on up to n threads, and the best score left
**                              out (so ties with the k-th can be found)
**   embsqlite_topk(...)        embsqlite_scan() of a range on one thread, for
**                              embsqlite's per-process cache
**   embsqlite_ties(...)        the rows of a scan that score exactly s
**   embsqlite_positions(...)   row numbers of a sorted list of rowids in the
**                              sorted rowids of a vector file
**   embsqlite_rowid_index(a, n)  sort n (rowid, row) pairs by rowid; -1 if two
**                              rows share a rowid
**   embsqlite_subset_open(aPair, n, aMark)  a handle to the mark array aMark
**                              of the n rows that the sorted pairs aPair map
**   embsqlite_subset_close(h)  forget handle h; the number of rows marked, or
**                              -1 if a rowid named was not among the pairs
**   embsqlite_marked(aMark, lo, hi, aOut)  the rows lo..hi-1 whose mark is
**                              set, ascending, for embsqlite_scan()
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
**   embsqlite_sink_append(h, rowid, embedding)  append the float32 blob
**                              `embedding` to file sink h; NULL. Rowids must
**                              ascend: the statement reads the table in rowid
**                              order (NOT INDEXED), and any other order is an
**                              error, never a misplaced row.
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

#include <errno.h>
#include <pthread.h>
#include <unistd.h>

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
  unsigned char *aOut;     /* nRow rows of nByte bytes (a matrix sink) */
  long long nRow;
  int nByte;
  long long n;             /* rows received */
  int bOver;               /* a row did not fit, or a write failed */
  /* A file sink (fd>=0): rows are appended in rowid order and written to fd
  ** from offset iOff through a buffer; each row's rowid and squared norm are
  ** kept, and written after the matrix when the sink is closed. */
  int fd;
  long long iOff;
  unsigned char *aBuf;     /* SINK_BUFFER bytes, whole rows */
  long long nBuf;          /* bytes used in aBuf */
  long long nFlushed;      /* matrix bytes written to fd so far */
  long long *aRowid;
  double *aNorm2;
  long long nAlloc;        /* slots of aRowid and aNorm2 */
  Sink *pNext;
};
static Sink *sinkList = 0;
static long long sinkLast = 0;
static pthread_mutex_t sinkMutex = PTHREAD_MUTEX_INITIALIZER;
#define SINK_BUFFER (1<<20)

/* The open sink of handle h, or NULL; the caller holds sinkMutex. */
static Sink *sink_find(long long h){
  Sink *p;
  for(p=sinkList; p && p->iHandle!=h; p=p->pNext){}
  return p;
}

/*
** The arguments of embsqlite_sink and embsqlite_sink_append: two integers (a
** handle, then a row number or rowid) and a row. Sets *pBlob and *nBlob when
** argument 3 is a BLOB (else 0) and returns its type; on integers of another
** type reports zErr and returns -1.
*/
static int sink_args(sqlite3_context *ctx, sqlite3_value **argv, const char *zErr,
                     const void **pBlob, int *nBlob){
  int eType = sqlite3_value_type(argv[2]);
  if( sqlite3_value_type(argv[0])!=SQLITE_INTEGER
   || sqlite3_value_type(argv[1])!=SQLITE_INTEGER ){
    sqlite3_result_error(ctx, zErr, -1);
    return -1;
  }
  *pBlob = 0;
  *nBlob = 0;
  if( eType==SQLITE_BLOB ){
    *pBlob = sqlite3_value_blob(argv[2]);
    *nBlob = sqlite3_value_bytes(argv[2]);
  }
  return eType;
}

/* Add p to the list of open sinks; its handle. */
static long long sink_add(Sink *p){
  long long h;
  pthread_mutex_lock(&sinkMutex);
  h = p->iHandle = ++sinkLast;
  p->pNext = sinkList;
  sinkList = p;
  pthread_mutex_unlock(&sinkMutex);
  return h;
}

/* Open a sink on aOut; its handle (> 0), or 0 when out of memory. */
static long long embsqlite_sink_open(unsigned char *aOut, long long nRow, int nByte){
  Sink *p = (Sink*)calloc(1, sizeof(Sink));
  if( p==0 ) return 0;
  p->aOut = aOut;
  p->nRow = nRow;
  p->nByte = nByte;
  p->fd = -1;
  return sink_add(p);
}

/*
** Open a file sink: rows of nByte bytes appended by embsqlite_sink_append()
** are written to the open file descriptor fd from offset iOff. Its handle
** (> 0), or 0 when out of memory or nByte is not a positive multiple of 4.
*/
static long long embsqlite_sink_file(int fd, int nByte, long long iOff){
  Sink *p;
  if( fd<0 || nByte<=0 || nByte%4 || nByte>SINK_BUFFER || iOff<0 ) return 0;
  p = (Sink*)calloc(1, sizeof(Sink));
  if( p==0 ) return 0;
  p->aBuf = (unsigned char*)malloc(SINK_BUFFER);
  if( p->aBuf==0 ){ free(p); return 0; }
  p->nByte = nByte;
  p->fd = fd;
  p->iOff = iOff;
  return sink_add(p);
}

/* Write all n bytes of a to fd at offset iOff; 0 on success. */
static int write_all(int fd, const unsigned char *a, long long n, long long iOff){
  while( n>0 ){
    ssize_t w = pwrite(fd, a, (size_t)n, (off_t)iOff);
    if( w<0 ){
      if( errno==EINTR ) continue;
      return 1;
    }
    if( w==0 ) return 1;
    a += w; n -= w; iOff += w;
  }
  return 0;
}

/* Write the buffered rows of file sink p; sets bOver on a write error. */
static void sink_flush(Sink *p){
  if( p->nBuf>0 && !p->bOver ){
    if( write_all(p->fd, p->aBuf, p->nBuf, p->iOff + p->nFlushed) ) p->bOver = 1;
    else p->nFlushed += p->nBuf;
  }
  p->nBuf = 0;
}

/*
** The byte offset of the norms that follow a matrix of nRow rows of nByte
** bytes written from iOff: the next multiple of 8. The rowids follow the
** norms (8 bytes each).
*/
static long long sink_norms_offset(long long iOff, long long nRow, int nByte){
  long long end = iOff + nRow*nByte;
  return (end + 7) & ~7LL;
}

/* Finish file sink p: flush, then write its norms and rowids; 0 on success. */
static int sink_finish(Sink *p){
  long long iNorms;
  sink_flush(p);
  if( p->bOver ) return 1;
  iNorms = sink_norms_offset(p->iOff, p->n, p->nByte);
  if( p->n==0 ) return 0;
  if( write_all(p->fd, (const unsigned char*)p->aNorm2, 8*p->n, iNorms) ) return 1;
  return write_all(p->fd, (const unsigned char*)p->aRowid, 8*p->n, iNorms + 8*p->n);
}

/*
** Close sink h: the rows it received, or -1 if a row did not fit, a write
** failed or h is unknown. A file sink writes its norms and rowids first.
*/
static long long embsqlite_sink_close(long long h){
  Sink **pp, *p = 0;
  long long n = -1;
  pthread_mutex_lock(&sinkMutex);
  for(pp=&sinkList; *pp; pp=&(*pp)->pNext){
    if( (*pp)->iHandle==h ){ p = *pp; *pp = p->pNext; break; }
  }
  pthread_mutex_unlock(&sinkMutex);
  if( p ){
    if( p->fd>=0 && sink_finish(p) ) p->bOver = 1;
    n = p->bOver ? -1 : p->n;
    free(p->aBuf);
    free(p->aRowid);
    free(p->aNorm2);
    free(p);
  }
  return n;
}

/*
** embsqlite_sink_append(h, rowid, embedding): append one row to file sink h.
** Rowids must ascend (the statement reads the table in rowid order); a row of
** another size, a rowid out of order or a failed write is an error.
*/
static void sinkAppendFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  long long h = sqlite3_value_int64(argv[0]);
  long long iRowid = sqlite3_value_int64(argv[1]);
  const void *pRow;
  const unsigned char *pBlob;
  int nBlob, eType;
  const char *zErr = 0;
  Sink *p;
  (void)argc;
  eType = sink_args(ctx, argv,
      "embsqlite_sink_append: arguments 1 and 2 must be a sink handle and a rowid",
      &pRow, &nBlob);
  if( eType<0 ) return;
  pBlob = (const unsigned char*)pRow;
  pthread_mutex_lock(&sinkMutex);
  p = sink_find(h);
  if( p==0 || p->fd<0 ){
    zErr = "embsqlite_sink_append: argument 1 is not an open file sink";
  }else if( p->bOver ){
    zErr = "embsqlite_sink_append: the sink failed earlier";
  }else if( eType!=SQLITE_BLOB || nBlob!=p->nByte || pBlob==0
         || (p->n>0 && iRowid<=p->aRowid[p->n-1]) ){
    p->bOver = 1;
    zErr = "embsqlite_sink_append: the row is not a blob of the sink's row size, "
           "or its rowid does not ascend";
  }else{
    if( p->n==p->nAlloc ){
      long long nNew = p->nAlloc ? 2*p->nAlloc : 1024;
      long long *aR = (long long*)realloc(p->aRowid, sizeof(long long)*(size_t)nNew);
      double *aN = aR ? (double*)realloc(p->aNorm2, sizeof(double)*(size_t)nNew) : 0;
      if( aR ) p->aRowid = aR;
      if( aN ) p->aNorm2 = aN;
      if( aR==0 || aN==0 ){
        p->bOver = 1;
        zErr = "embsqlite_sink_append: out of memory";
      }else{
        p->nAlloc = nNew;
      }
    }
    if( zErr==0 ){
      if( p->nBuf + nBlob > SINK_BUFFER ) sink_flush(p);
      memcpy(p->aBuf + p->nBuf, pBlob, (size_t)nBlob);
      p->nBuf += nBlob;
      p->aRowid[p->n] = iRowid;
      p->aNorm2[p->n] = norm2_f32(pBlob, nBlob/4);
      p->n++;
      if( p->bOver ) zErr = "embsqlite_sink_append: writing the file failed";
    }
  }
  pthread_mutex_unlock(&sinkMutex);
  if( zErr ){
    sqlite3_result_error(ctx, zErr, -1);
  }else{
    sqlite3_result_null(ctx);
  }
}

/* embsqlite_sink(h, i, embedding): copy one row into row i of sink h. */
static void sinkFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  long long h = sqlite3_value_int64(argv[0]);
  long long i = sqlite3_value_int64(argv[1]);
  const void *pBlob;
  int nBlob, eType;
  const char *zErr = 0;
  Sink *p;
  (void)argc;
  eType = sink_args(ctx, argv,
      "embsqlite_sink: arguments 1 and 2 must be a sink handle and a row number",
      &pBlob, &nBlob);
  if( eType<0 ) return;
  pthread_mutex_lock(&sinkMutex);
  p = sink_find(h);
  if( p==0 ){
    zErr = "embsqlite_sink: argument 1 is not an open sink";
  }else if( p->fd>=0 ){
    zErr = "embsqlite_sink: argument 1 is a file sink";
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
    rc = sqlite3_create_function(db, "embsqlite_data_version", 1,
        SQLITE_UTF8|SQLITE_DIRECTONLY, 0, dataVersionFunc, 0, 0);
  }
  if( rc==SQLITE_OK ){
    rc = sqlite3_create_function(db, "embsqlite_sink_append", 3,
        SQLITE_UTF8|SQLITE_DIRECTONLY, 0, sinkAppendFunc, 0, 0);
  }
  if( rc==SQLITE_OK ){
    rc = sqlite3_create_function(db, "embsqlite_mark", 2,
        SQLITE_UTF8|SQLITE_DIRECTONLY, 0, markFunc, 0, 0);
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
** The cache keeps rows in id order, so there this is `ORDER BY score DESC,
** id`; the vector file keeps rowid order, and Python orders its ties by id.
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
** Offer hit h to the heap of the best k (*pN hits so far); a hit that is left
** out, or pushed out, raises *pBestOut to its score if higher.
*/
static void hit_offer(Hit *aHeap, int *pN, int k, Hit h, double *pBestOut){
  if( *pN<k ){
    aHeap[*pN] = h;
    heap_up(aHeap, (*pN)++);
  }else if( hit_below(&aHeap[0], &h) ){
    if( aHeap[0].score>*pBestOut ) *pBestOut = aHeap[0].score;
    aHeap[0] = h;
    heap_down(aHeap, *pN, 0);
  }else if( h.score>*pBestOut ){
    *pBestOut = h.score;
  }
}

/*
** Empty the heap of n hits into aRow/aScore, best first (the lowest-ranked hit
** goes to the last free slot until none is left); returns n.
*/
static int hits_sorted(Hit *aHeap, int n, long long *aRow, double *aScore){
  int nOut = n;
  while( n>0 ){
    aRow[n-1] = aHeap[0].row;
    aScore[n-1] = aHeap[0].score;
    aHeap[0] = aHeap[--n];
    heap_down(aHeap, n, 0);
  }
  return nOut;
}

/*
** One share of a scan: rows lo..hi-1, or the rows aPos[lo..hi-1] when aPos
** is not NULL, all but row `skip`, into a heap of the best k. `best_out` is
** the best score among the rows scored and not kept (-INFINITY if none), so
** the caller can tell whether a row left out ties with the k-th.
*/
typedef struct ScanPart ScanPart;
struct ScanPart {
  const unsigned char *matrix;
  const double *aNorm2;
  long long nRow;
  int nDim;
  const QueryVec *q;
  const long long *aPos;
  long long lo, hi, skip;
  int k;
  Hit *aHeap;
  int nHeap;
  double best_out;
  int rc;                  /* 0, or -2: a score not finite, a position out of range */
};

/* The score of row i (cosine_similarity, the same bits as SQL). */
static double row_score(const ScanPart *s, long long i){
  if( s->aNorm2[i]==0.0 || s->q->norm2==0.0 ){
    return 0.0;   /* cosine_of() of a zero vector, without the dot product */
  }
  return cosine_of(dot_f32(s->matrix + (size_t)i*s->nDim*4, s->q->v, s->nDim),
                   s->aNorm2[i], s->q->norm2);
}

static void *scan_part(void *pArg){
  ScanPart *s = (ScanPart*)pArg;
  long long j;
  s->nHeap = 0;
  s->best_out = -INFINITY;
  for(j=s->lo; j<s->hi; j++){
    Hit h;
    long long i = s->aPos ? s->aPos[j] : j;
    if( i<0 || i>=s->nRow ){ s->rc = -2; break; }
    if( i==s->skip ) continue;
    h.score = row_score(s, i);
    h.row = i;
    if( !isfinite(h.score) ){ s->rc = -2; break; }
    hit_offer(s->aHeap, &s->nHeap, s->k, h, &s->best_out);
  }
  return 0;
}

/* Rows each thread of a scan gets at least; fewer rows use fewer threads. */
#define SCAN_ROWS_PER_THREAD 16384
#define SCAN_MAX_THREADS 16

/* How many shares n rows make for up to nThread threads (1 to SCAN_MAX_THREADS). */
static int scan_shares(int nThread, long long n){
  int nPart = nThread<1 ? 1 : nThread>SCAN_MAX_THREADS ? SCAN_MAX_THREADS : nThread;
  if( n/SCAN_ROWS_PER_THREAD<nPart ) nPart = (int)(n/SCAN_ROWS_PER_THREAD);
  return nPart<1 ? 1 : nPart;
}

/*
** Run xShare on each of the nPart shares in aShare (structs of nSize bytes):
** one thread each, share 0 on the calling thread, and any share whose thread
** could not be started after it, on the calling thread too.
*/
static void run_shares(void *(*xShare)(void*), void *aShare, size_t nSize, int nPart){
  pthread_t aThread[SCAN_MAX_THREADS];
  int i, nStarted = 1;
  for(i=1; i<nPart; i++){
    if( pthread_create(&aThread[i], 0, xShare, (char*)aShare + nSize*i)!=0 ) break;
    nStarted++;
  }
  xShare(aShare);
  for(i=nStarted; i<nPart; i++) xShare((char*)aShare + nSize*i);
  for(i=1; i<nStarted; i++) pthread_join(aThread[i], 0);
}

/*
** Score the rows lo..hi-1 of the row-major matrix of nRow embeddings of nDim
** float32 values (or, when aPos is not NULL, the rows whose numbers are
** aPos[lo..hi-1]), all but row `skip` (-1 skips none), whose squared norms
** are aNorm2 (from embsqlite_norms), against the float32 blob `query` of nDim
** values, with up to nThread threads, and write the best k (score desc, then
** row), best first, to aRow/aScore. When pOut is not NULL it receives the best
** score among the rows scored and not written (-INFINITY if none): equal to
** the last score written, some row left out ties with it.
** Returns how many were written, -1 when out of memory, -2 when a score is
** not finite (a NaN or infinity in the data) or the arguments are out of range.
*/
static long long embsqlite_scan(
  const unsigned char *matrix, const double *aNorm2, long long nRow, int nDim,
  const unsigned char *query, const long long *aPos, long long lo, long long hi,
  long long skip, int k, int nThread, long long *aRow, double *aScore,
  double *pOut
){
  QueryVec *q;
  ScanPart aPart[SCAN_MAX_THREADS];
  Hit *aAll;
  long long n = hi-lo;
  int nPart, i, rc = 0;
  double best_out = -INFINITY;
  if( pOut ) *pOut = -INFINITY;
  if( lo<0 || lo>hi || (aPos==0 && hi>nRow) || nDim<0 || k<0 ) return -2;
  if( k==0 || lo==hi ) return 0;
  nPart = scan_shares(nThread, n);
  q = queryvec_malloc(query, nDim);
  aAll = (Hit*)malloc(sizeof(Hit)*(size_t)k*(size_t)nPart);
  if( q==0 || aAll==0 ){ free(q); free(aAll); return -1; }
  for(i=0; i<nPart; i++){
    ScanPart *s = &aPart[i];
    s->matrix = matrix; s->aNorm2 = aNorm2; s->nRow = nRow; s->nDim = nDim;
    s->q = q; s->aPos = aPos; s->skip = skip; s->k = k; s->rc = 0;
    s->lo = lo + n*i/nPart;
    s->hi = lo + n*(i+1)/nPart;
    s->aHeap = aAll + (size_t)k*i;
  }
  run_shares(scan_part, aPart, sizeof(aPart[0]), nPart);
  for(i=0; i<nPart; i++){
    if( aPart[i].rc ) rc = aPart[i].rc;
    if( aPart[i].best_out>best_out ) best_out = aPart[i].best_out;
  }
  if( rc==0 ){
    /* Gather the parts' heaps, then heap-select the best k of them. */
    Hit *aHeap = aAll;
    int nHeap = 0;
    for(i=0; i<nPart; i++){
      int j;
      for(j=0; j<aPart[i].nHeap; j++){
        /* the merged heap is the front of aAll: its next slot is never past
        ** the hit offered (passed by value) */
        hit_offer(aHeap, &nHeap, k, aPart[i].aHeap[j], &best_out);
      }
    }
    rc = hits_sorted(aHeap, nHeap, aRow, aScore);
    if( pOut ) *pOut = best_out;
  }
  free(q);
  free(aAll);
  return rc;
}

/*
** Score rows lo..hi-1 (all but row `skip`; -1 skips none) of the row-major
** matrix of nRow embeddings and write the best k, best first, to aRow/aScore:
** embsqlite_scan() on one thread, for the cache, whose rows are in id order.
*/
static long long embsqlite_topk(
  const unsigned char *matrix, const double *aNorm2, long long nRow, int nDim,
  const unsigned char *query, long long lo, long long hi, long long skip,
  int k, long long *aRow, double *aScore
){
  return embsqlite_scan(matrix, aNorm2, nRow, nDim, query, 0, lo, hi, skip, k,
                        1, aRow, aScore, 0);
}

/*
** The rows of a scan like embsqlite_scan()'s (one thread) whose score is
** exactly `score`: how many, with the first nCap row numbers written to aOut
** in scan order; -2 as embsqlite_scan(), -1 when out of memory.
*/
static long long embsqlite_ties(
  const unsigned char *matrix, const double *aNorm2, long long nRow, int nDim,
  const unsigned char *query, const long long *aPos, long long lo, long long hi,
  long long skip, double score, long long *aOut, long long nCap
){
  ScanPart s;
  QueryVec *q;
  long long j, n = 0;
  if( lo<0 || lo>hi || (aPos==0 && hi>nRow) || nDim<0 ) return -2;
  q = queryvec_malloc(query, nDim);
  if( q==0 ) return -1;
  memset(&s, 0, sizeof(s));
  s.matrix = matrix; s.aNorm2 = aNorm2; s.nRow = nRow; s.nDim = nDim; s.q = q;
  for(j=lo; j<hi; j++){
    long long i = aPos ? aPos[j] : j;
    if( i<0 || i>=nRow ){ n = -2; break; }
    if( i==skip || row_score(&s, i)!=score ) continue;
    if( n<nCap ) aOut[n] = i;
    n++;
  }
  free(q);
  return n;
}

/*
** The row numbers of the rowids aWant[0..nWant-1] (ascending) in aRowid[0..
** nRow-1] (ascending): written to aOut in order, rowids not there left out;
** returns how many were found, or -2 if aWant does not ascend.
*/
static long long embsqlite_positions(
  const long long *aRowid, long long nRow, const long long *aWant, long long nWant,
  long long *aOut
){
  long long i, at = 0, n = 0;
  for(i=0; i<nWant; i++){
    long long lo = at, hi = nRow, step = 1;
    if( i>0 && aWant[i]<=aWant[i-1] ) return -2;
    /* gallop from the last position (a filter's rowids are often close together),
    ** then bisect: a walk in order, not log(nRow) jumps across the array each */
    while( lo+step<nRow && aRowid[lo+step]<aWant[i] ){ lo += step; step *= 2; }
    if( lo+step<nRow ) hi = lo+step+1;
    while( lo<hi ){
      long long mid = lo + (hi-lo)/2;
      if( aRowid[mid]<aWant[i] ) lo = mid+1; else hi = mid;
    }
    at = lo;
    if( at<nRow && aRowid[at]==aWant[i] ) aOut[n++] = at;
  }
  return n;
}

/*
** Write to aOut, ascending, the rows lo..hi-1 whose mark in aMark is set (a
** filter's rows, for embsqlite_scan()'s list of rows); returns how many.
*/
static long long embsqlite_marked(
  const unsigned char *aMark, long long lo, long long hi, long long *aOut
){
  long long i, n = 0;
  for(i=lo; i<hi; i++) if( aMark[i] ) aOut[n++] = i;
  return n;
}
