from services.inbound.server import main

main()
