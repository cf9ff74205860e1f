"""Model families, one file each; see genlab.registry for the name -> family table."""
