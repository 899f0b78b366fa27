"""Planning: a request, a recipe and the machine resolved into one frozen Plan before anything compiles."""
