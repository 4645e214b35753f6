"""What every self-contained HTML page is drawn with: the page style, tables and inline SVG
plots (no external asset, so a page opens on an air-gapped network)."""
