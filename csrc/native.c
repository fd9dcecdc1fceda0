/*
** native.c: the C half of the embsqlite Python module (compiled only into the
** cffi module embsqlite._native, right after embsqlite.c, whose static helpers
** it uses). Nothing here is an SQL function.
**
**   embsqlite_auto_init(...)   the entry registered with sqlite3_auto_extension
**   embsqlite_is_bound()       1 once an auto-extension call has bound this copy
**                              of the extension to a SQLite library
**   embsqlite_register_on(db)  register the SQL functions on an open connection
**                              of that library
**   embsqlite_cosine(a, b, n)  cosine_similarity of two blobs, without SQLite
**   embsqlite_all_finite(a, n) 1 if the n float32 values of a are all finite
**   embsqlite_read_matrix(...) copy a collection's embeddings, in id order, from
**                              a connection of the bound library into a matrix
**                              (rows whose embedding is NULL are left out)
**   embsqlite_data_version(db, zDb)  a counter that moves with every commit to
**                              database zDb of db, this connection's own too
**   embsqlite_is_memdb(db, zDb) 1 if database zDb of db lives in the "memdb"
**                              VFS (sqlite3_deserialize), whose counters
**                              restart with every image
**   embsqlite_norms(...)       squared L2 norm of each row of such a matrix
**   embsqlite_topk(...)        best k rows of an in-memory matrix of float32
**                              embeddings, for embsqlite's per-process cache
**
** The cache keeps each row's squared norm, so a search computes only dot
** products: half the arithmetic of cosine_similarity(), which must compute
** both. dot_f32(), norm2_f32() and cosine_of() are the ones cosine_similarity()
** uses (embsqlite_dot.h), so a cached search returns the same scores, to the
** bit, as `ORDER BY cosine_similarity(embedding, :q) DESC, id`.
*/

static int embsqlite_is_bound(void){ return sqlite3_api!=0; }

/*
** The auto-extension entry of the cffi copy: like sqlite3_embsqlite_init, but
** a connection of another SQLite library than the one this copy is bound to
** gets nothing, and opens without error (an auto-extension that fails makes
** every sqlite3_open of that library fail).
*/
static int embsqlite_auto_init(
  sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi
){
  if( sqlite3_api!=0 && sqlite3_api!=pApi ) return SQLITE_OK;
  return sqlite3_embsqlite_init(db, pzErrMsg, pApi);
}

static int embsqlite_register_on(sqlite3 *db){
  if( sqlite3_api==0 ) return SQLITE_MISUSE;
  return sqlite3_embsqlite_init(db, 0, sqlite3_api);
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
** Copy the embeddings of collection iColl, in id order, into aOut: room for
** nRow rows of nByte bytes (the caller counted the collection's rows). A row
** whose embedding is NULL has no vector to rank and is skipped. Runs on db,
** an open connection of the SQLite library this copy is bound to. Returns the
** number of rows copied, or -1 when a vector is not a blob or of another
** length, or there is one row too many (the caller then leaves the search to
** SQLite), or -2 on an SQLite error or when this copy is not bound.
*/
static long long embsqlite_read_matrix(
  sqlite3 *db, long long iColl, unsigned char *aOut, long long nRow, int nByte
){
  static const char zSql[] =
    "SELECT embedding FROM embeddings WHERE collection_id=?1 ORDER BY id";
  sqlite3_stmt *pStmt = 0;
  long long n = 0;
  int rc;
  if( sqlite3_api==0 ) return -2;
  if( sqlite3_prepare_v2(db, zSql, -1, &pStmt, 0)!=SQLITE_OK ) return -2;
  sqlite3_bind_int64(pStmt, 1, iColl);
  while( (rc = sqlite3_step(pStmt))==SQLITE_ROW ){
    const void *pBlob;
    int eType = sqlite3_column_type(pStmt, 0);
    if( eType==SQLITE_NULL ) continue;
    if( n==nRow || eType!=SQLITE_BLOB || sqlite3_column_bytes(pStmt, 0)!=nByte ){
      n = -1;
      break;
    }
    pBlob = sqlite3_column_blob(pStmt, 0);
    if( pBlob==0 ){ n = -2; break; }
    memcpy(aOut + (size_t)n*nByte, pBlob, (size_t)nByte);
    n++;
  }
  if( n>=0 && rc!=SQLITE_DONE ) n = -2;
  sqlite3_finalize(pStmt);
  return n;
}

/*
** SQLITE_FCNTL_DATA_VERSION of database zDb ("main", "temp", ...) of db. Unlike
** PRAGMA data_version it also moves when this connection commits, whatever
** wrote the pages (SQL, incremental blob I/O, a backup into it). -1 when the
** database has no such counter or this copy is not bound.
*/
static long long embsqlite_data_version(sqlite3 *db, const char *zDb){
  unsigned int v = 0;
  if( sqlite3_api==0 ) return -1;
  if( sqlite3_file_control(db, zDb, SQLITE_FCNTL_DATA_VERSION, &v)!=SQLITE_OK ){
    return -1;
  }
  return (long long)v;
}

/*
** 1 if database zDb of db is served by the "memdb" VFS, as every database
** loaded by sqlite3_deserialize() is: each new image restarts its data
** version, so no counter can tell two images apart. 0 otherwise (or when
** this copy is not bound).
*/
static int embsqlite_is_memdb(sqlite3 *db, const char *zDb){
  char *zName = 0;
  int isMem;
  if( sqlite3_api==0 ) return 0;
  if( sqlite3_file_control(db, zDb, SQLITE_FCNTL_VFSNAME, &zName)!=SQLITE_OK ){
    return 0;
  }
  isMem = zName!=0 && strstr(zName, "memdb")!=0;
  sqlite3_free(zName);
  return isMem;
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
** Score rows lo..hi-1 (all but row `skip`; -1 skips none) of the row-major
** matrix of nRow embeddings of nDim float32 values, whose squared norms are
** aNorm2 (from embsqlite_norms), against the float32 blob `query` of nDim
** values, and write the best k, best first, to aRow/aScore.
** Returns how many were written, -1 when out of memory, -2 when a score is
** not finite (a NaN or infinity in the data) or the arguments are out of range.
*/
static long long embsqlite_topk(
  const unsigned char *matrix, const double *aNorm2, long long nRow, int nDim,
  const unsigned char *query, long long lo, long long hi, long long skip,
  int k, long long *aRow, double *aScore
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
    if( i==skip ) continue;
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
