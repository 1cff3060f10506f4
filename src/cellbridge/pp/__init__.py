"""Preprocessing: RNA, ATAC (gene activity, TF-IDF/LSI), protein (CLR, protein -> gene)."""
