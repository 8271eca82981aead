# Placeholder: install rules are completed with the packaging work.
install(FILES include/mgpo.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
