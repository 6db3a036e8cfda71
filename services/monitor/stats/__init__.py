"""Statistical tests of the monitor, one small module each, vectorised over numpy arrays.

``registry`` maps a column kind to its tests; ``multiple_testing`` corrects
one window's p-values as a family; ``page_hinkley`` watches a stream of errors.
"""
