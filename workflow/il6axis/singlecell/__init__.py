"""singlecell"""
