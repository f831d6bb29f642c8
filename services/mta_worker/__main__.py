from services.mta_worker.server import main

main()
