from services.events.server import main

main()
